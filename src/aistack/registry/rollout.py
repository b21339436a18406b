"""Shadow and canary rollouts, recorded on the registered model in the registry.

A rollout is a set of registered-model tags (`rollout.mode`, `rollout.version`,
`rollout.share`, `rollout.status`, `rollout.reason`), so the CLI that starts it,
every server worker that routes traffic, and `aistack monitor` read one state.
Ending a rollout records why (tags) and moves aliases through the registry, so
the alias history keeps who, when and why.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aistack.errors import ConfigError, RegistryError
from aistack.registry.aliases import Registry

Mode = Literal["shadow", "canary"]
Status = Literal["starting", "active", "rolled_back", "promoted", "stopped"]
_PREFIX = "rollout."
STICKY_BUCKETS = 10_000


@dataclass(frozen=True)
class Rollout:
    """One rollout: which version gets which traffic, and how it ended."""

    mode: Mode
    version: int
    share: float
    status: Status
    reason: str = ""
    started_at: str = ""

    @property
    def active(self) -> bool:
        """Whether traffic is routed to the challenger now."""
        return self.status == "active"


def sticky_bucket(entity: object) -> int:
    """A stable bucket in [0, 10000) for an entity: the same one every request."""
    return zlib.crc32(str(entity).encode()) % STICKY_BUCKETS


def routes_to_challenger(rollout: Rollout, entity: object) -> bool:
    """Canary: whether this entity's requests are answered by the challenger."""
    return sticky_bucket(entity) < rollout.share / 100 * STICKY_BUCKETS


def read_rollout(registry: Registry, model: str) -> Rollout | None:
    """The model's last rollout, None if it never had one."""
    try:
        tags = registry.client.get_registered_model(model).tags
    except Exception:
        return None
    return rollout_of(tags)


def rollout_of(tags: Mapping[str, Any]) -> Rollout | None:
    """The rollout recorded in a registered model's tags, None if none is."""
    if f"{_PREFIX}mode" not in tags:
        return None
    return Rollout(
        mode=tags[f"{_PREFIX}mode"],
        version=int(tags[f"{_PREFIX}version"]),
        share=float(tags.get(f"{_PREFIX}share", "100")),
        status=tags.get(f"{_PREFIX}status", "stopped"),
        reason=tags.get(f"{_PREFIX}reason", ""),
        started_at=tags.get(f"{_PREFIX}started_at", ""),
    )


def _set(registry: Registry, model: str, values: dict[str, str]) -> None:
    for key, value in values.items():
        registry.client.set_registered_model_tag(model, f"{_PREFIX}{key}", value)


def start_rollout(
    registry: Registry,
    model: str,
    *,
    mode: Mode,
    share: float,
    version: int | None,
    actor: str,
) -> Rollout:
    """Route traffic to `version` (default: the challenger) as shadow or canary."""
    if not 0 < share <= 100:  # noqa: PLR2004
        raise ConfigError(f"--canary: share must be in (0, 100], got {share}")
    chosen = version or registry.version_of(model, "challenger")
    if chosen is None:
        msg = f"model {model!r} has no challenger: train one or pass --version"
        raise RegistryError(msg)
    if chosen == registry.version_of(model, "champion"):
        raise ConfigError(f"--version: {chosen} is already the champion")
    if registry.version_of(model, "challenger") != chosen:
        registry.move(
            model, "challenger", chosen, actor=actor, reason=f"{mode} rollout"
        )
    started = datetime.now(UTC).isoformat()
    rollout = Rollout(
        mode, chosen, share if mode == "canary" else 100.0, "active", "", started
    )
    with registry.decision(model):
        _set(
            registry,
            model,
            {
                "status": "starting",  # never read as active while tags change
                "mode": mode,
                "version": str(chosen),
                "share": str(rollout.share),
                "reason": f"started by {actor}",
                "started_at": started,
            },
        )
        _set(registry, model, {"status": "active"})
    registry.record(
        actor, "rollout", use_case=model, mode=mode, version=chosen, share=share
    )
    return rollout


def end_rollout(
    registry: Registry,
    model: str,
    *,
    status: Status,
    reason: str,
    actor: str,
    judged: Rollout | None = None,
) -> Rollout | None:
    """Stop routing to the challenger and record why; promote it when `promoted`.

    Decided once: under the model's decision lock the rollout is read again, and
    nothing happens unless it is still active (and, with `judged`, still the
    rollout the caller judged): of two workers deciding at once, one acts and
    the other finds the decision made.
    """
    with registry.decision(model):
        current = read_rollout(registry, model)
        if current is None or not current.active:
            return current
        if judged is not None and current.started_at != judged.started_at:
            return current  # a newer rollout started after this one was judged
        _decide(registry, model, current, status=status, reason=reason, actor=actor)
    return read_rollout(registry, model)


def _decide(
    registry: Registry,
    model: str,
    current: Rollout,
    *,
    status: Status,
    reason: str,
    actor: str,
) -> None:
    _set(registry, model, {"status": status, "reason": reason})
    registry.client.set_model_version_tag(
        model, str(current.version), "rollout_result", f"{status}: {reason}"
    )
    registry.record(
        actor, "rollout", use_case=model, status=status, version=current.version
    )
    if status == "promoted":
        registry.move(
            model,
            "champion",
            current.version,
            actor=actor,
            reason=reason,
            action="promote",
        )
    if registry.version_of(model, "challenger") == current.version:
        registry.move(model, "challenger", None, actor=actor, reason=reason)
