"""How the platform finds use cases: the `aistack.use_cases` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from aistack.contract.ranking import RankingUseCase
from aistack.contract.usecase import UseCase
from aistack.errors import DeclarationError, UseCaseNotFoundError

ENTRY_POINT_GROUP = "aistack.use_cases"
AnyUseCase = UseCase | RankingUseCase


def discover_all() -> tuple[dict[str, AnyUseCase], dict[str, str]]:
    """Registered use cases, and the entry points that failed, with the reason.

    A use case that fails to import or to validate is reported by its entry-point
    name; the others keep working.
    """
    found: dict[str, AnyUseCase] = {}
    broken: dict[str, str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            use_case = point.load()
        except Exception as exc:  # a plugin's own bug: report it, keep the rest
            broken[point.name] = (
                f"{point.value} failed to load: {type(exc).__name__}: {exc}"
            )
            continue
        if not isinstance(use_case, UseCase | RankingUseCase):
            kind = type(use_case).__name__
            broken[point.name] = (
                f"{point.value} is a {kind}, expected a UseCase or RankingUseCase"
            )
            continue
        found[use_case.name] = use_case
    return found, broken


def discover() -> dict[str, AnyUseCase]:
    """Every use case that loads, under the `aistack.use_cases` entry-point group."""
    return discover_all()[0]


def get_use_case(
    name: str,
    registry: Mapping[str, AnyUseCase] | None = None,
    *,
    action: str = "this command",
) -> UseCase:
    """The labelled-rows use case called `name` (see `get_any_use_case`).

    A ranking use case raises a DeclarationError saying `action` does not
    apply to it.
    """
    found = get_any_use_case(name, registry)
    if isinstance(found, RankingUseCase):
        msg = f"use case {name!r} is a ranking use case: {action} does not apply"
        raise DeclarationError(msg)
    return found


def get_any_use_case(
    name: str, registry: Mapping[str, AnyUseCase] | None = None
) -> AnyUseCase:
    """The use case called `name`, with the known names in the error if absent.

    A broken use case of that name raises its own load error; other broken
    plugins do not matter.
    """
    if registry is None:
        known, broken = discover_all()
    else:
        known, broken = dict(registry), {}
    if name not in known:
        if name in broken:
            raise DeclarationError(f"use case {name!r}: {broken[name]}")
        listed = ", ".join(sorted(known)) or "none"
        msg = f"use case {name!r} is not registered (known: {listed})"
        raise UseCaseNotFoundError(msg)
    return known[name]
