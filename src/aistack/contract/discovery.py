"""How the platform finds use cases: the `aistack.use_cases` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from aistack.contract.usecase import UseCase
from aistack.errors import DeclarationError, UseCaseNotFoundError

ENTRY_POINT_GROUP = "aistack.use_cases"


def discover() -> dict[str, UseCase]:
    """Every use case registered under the `aistack.use_cases` entry-point group."""
    found: dict[str, UseCase] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        use_case = point.load()
        if not isinstance(use_case, UseCase):
            msg = (
                f"entry point {point.name} = {point.value} is a "
                f"{type(use_case).__name__}, expected an aistack UseCase"
            )
            raise DeclarationError(msg)
        found[use_case.name] = use_case
    return found


def get_use_case(name: str, registry: Mapping[str, UseCase] | None = None) -> UseCase:
    """The use case called `name`, with the known names in the error if absent."""
    known = discover() if registry is None else registry
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        msg = f"use case {name!r} is not registered (known: {listed})"
        raise UseCaseNotFoundError(msg)
    return known[name]
