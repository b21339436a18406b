"""What the online API accepts and decides."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel

from aistack.errors import DeclarationError


@dataclass(frozen=True)
class Serving:
    """What the online API accepts and decides.

    `request` is the pydantic model of one payload: it must have the label
    columns and timestamp (the id is optional: a request id is used when absent).
    A score at or above `threshold` is a positive decision (binary) or flags an
    anomaly (anomaly task); other tasks do not read it.
    """

    request: type[BaseModel]
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise DeclarationError("serving: threshold must be a finite number")
