"""What the online API accepts and decides."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from aistack.errors import DeclarationError


@dataclass(frozen=True)
class Serving:
    """What the online API accepts and decides.

    `request` is the pydantic model of one payload: it must have the label
    columns and timestamp (the id is optional: a request id is used when absent).
    A score at or above `threshold` is a positive decision.
    """

    request: type[BaseModel]
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise DeclarationError("serving: threshold must be within [0, 1]")
