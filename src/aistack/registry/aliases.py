"""Model registry: MLflow versions and aliases, plus the history of every alias move.

MLflow keeps only where an alias points now; `ops.alias_events` keeps every move
(who, when, from which version to which, why), so "which version was champion on
a given date" has an answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from aistack.errors import RegistryError
from aistack.governance.audit import AuditLog, audit_event
from aistack.lake.delta import Lake
from aistack.locks import file_lock, postgres_lock

ALIAS_EVENTS = "ops.alias_events"
REFUSED_TAG = "refused"
"""Model-version tag of a version that failed its gates (value: which, why)."""
Alias = Literal["champion", "challenger"]
_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("alias", pa.string()),
        ("from_version", pa.int64()),
        ("to_version", pa.int64()),
        ("actor", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class AliasEvent:
    """One alias move; `to_version` None means the alias was removed."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    at: datetime
    reason: str


class Registry:
    """Aliases of registered models, with every move recorded."""

    def __init__(
        self, lake: Lake, tracking_uri: str, *, audit: AuditLog | None = None
    ) -> None:
        self.lake = lake
        self.uri = tracking_uri
        self.audit = audit
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextmanager
    def decision(self, model: str) -> Iterator[None]:
        """Hold the model's decision lock: one rollout decision at a time.

        MLflow tags have no compare-and-set, so deciders (every server worker's
        evaluator, `aistack monitor`, the CLI) take turns and re-read the state
        inside the lock. With a PostgreSQL registry the lock is a PostgreSQL
        advisory lock (it holds across hosts); otherwise an `flock` beside the
        workspace's tables (it holds across processes of one host).
        """
        key = zlib.crc32(f"aistack-decision:{model}".encode())
        if self.uri.startswith("postgresql"):
            with postgres_lock(self.uri, key):
                yield
            return
        with file_lock(self.lake.root.parent / ".locks" / f"decision-{key:08x}.lock"):
            yield

    def registered(self, model: str) -> tuple[dict[str, int], dict[str, str]]:
        """The model's aliases (alias -> version) and tags in one registry call;
        both empty when the model is unknown. Other errors raise, as `version_of`.
        """
        try:
            found = self.client.get_registered_model(model)
        except MlflowException as exc:
            if _not_found(exc):
                return {}, {}
            msg = f"registry: cannot read model {model!r}"
            raise RegistryError(f"{msg}: {exc.message.splitlines()[0]}") from exc
        aliases = {alias: int(version) for alias, version in found.aliases.items()}
        return aliases, dict(found.tags)

    def version_of(self, model: str, alias: str) -> int | None:
        """Version the alias points to, None when unset or the model is unknown.

        Only "not found" means absent: any other registry error (a locked or
        unreachable tracking database) raises, so a gate such as "not worse than
        the champion" can never pass because the registry failed to answer.
        """
        try:
            return int(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException as exc:
            if _not_found(exc):
                return None
            msg = f"registry: cannot read alias {alias!r} of {model!r}"
            raise RegistryError(f"{msg}: {exc.message.splitlines()[0]}") from exc

    def promote(
        self, model: str, version: int, *, actor: str, reason: str, force: bool = False
    ) -> AliasEvent:
        """Make `version` champion by hand; one that failed its gates needs `force`
        and a reason of its own (recorded with the failed gates)."""
        failed = self.failed_gates(model, version)
        if failed and not force:
            msg = (
                f"version {version}: failed its gates ({'; '.join(failed)}); pass "
                "--force and a --reason to promote it anyway"
            )
            raise RegistryError(msg)
        if failed and reason in ("", "manual promotion"):
            raise RegistryError(
                "--reason: say why a version that failed its gates wins"
            )
        if failed:
            reason = f"forced past failed gates ({', '.join(failed)}): {reason}"
        return self.move(
            model, "champion", version, actor=actor, reason=reason, action="promote"
        )

    def failed_gates(self, model: str, version: int) -> list[str]:
        """Gates the version's training run recorded as failed (its `gate.*` tags)."""
        self._check_version(model, version)
        run_id = self.client.get_model_version(model, str(version)).run_id
        if run_id is None:
            return []
        tags = self.client.get_run(run_id).data.tags
        return sorted(
            name.removeprefix("gate.")
            for name, value in tags.items()
            if name.startswith("gate.") and value.startswith("FAIL")
        )

    def refuse(self, model: str, version: int, *, reason: str) -> None:
        """Tag `version` as refused (it failed its gates): no alias moves to it."""
        self.client.set_model_version_tag(model, str(version), REFUSED_TAG, reason)

    def refused(self, model: str, version: int) -> str | None:
        """Why `version` was refused at registration, None if it was not."""
        self._check_version(model, version)
        tags = self.client.get_model_version(model, str(version)).tags
        return tags.get(REFUSED_TAG)

    def _check_version(self, model: str, version: int) -> None:
        try:
            self.client.get_model_version(model, str(version))
        except MlflowException as exc:
            msg = f"model {model!r} has no version {version}"
            raise RegistryError(msg) from exc

    def move(
        self,
        model: str,
        alias: Alias,
        version: int | None,
        *,
        actor: str,
        reason: str,
        action: str = "alias",
    ) -> AliasEvent:
        """Point `alias` at `version` (None removes it) and record the move (in
        the alias history, and as `action` in the audit log when it is kept)."""
        previous = self.version_of(model, alias)
        if version is None:
            if previous is not None:
                self.client.delete_registered_model_alias(model, alias)
        else:
            self._check_version(model, version)
            self.client.set_registered_model_alias(model, alias, str(version))
            self.client.set_model_version_tag(
                model, str(version), f"{alias}_reason", reason
            )
        event = AliasEvent(
            model, alias, previous, version, actor, datetime.now(UTC), reason
        )
        row = {k: [v] for k, v in event.__dict__.items()}
        self.lake.write(ALIAS_EVENTS, pa.table(row, schema=_SCHEMA), mode="append")
        self.record(
            actor,
            action,
            use_case=model,
            alias=alias,
            from_version=previous,
            to_version=version,
            reason=reason,
        )
        return event

    def record(self, actor: str, action: str, **details: Any) -> None:  # noqa: ANN401
        """Audit `action` by `actor` when this registry keeps an audit log."""
        if self.audit is not None:
            audit_event(self.audit, actor, action, **details)

    def history(self, model: str) -> list[AliasEvent]:
        """Every recorded alias move of `model`, oldest first."""
        if not self.lake.exists(ALIAS_EVENTS):
            return []
        rows = self.lake.dataset(ALIAS_EVENTS).to_table(
            filter=pc.field("model") == model
        )
        events = [AliasEvent(**r) for r in rows.to_pylist()]
        return sorted(events, key=lambda e: e.at)

    def version_at(self, model: str, alias: str, when: datetime) -> int | None:
        """Version `alias` pointed to at `when` (UTC), from the recorded moves."""
        current = None
        for event in self.history(model):
            if event.alias == alias and event.at <= when:
                current = event.to_version
        return current

    def rollback(self, model: str, *, actor: str, reason: str) -> AliasEvent:
        """Move `champion` back to the version it held before the current one."""
        current = self.version_of(model, "champion")
        if current is None:
            raise RegistryError(f"model {model!r} has no champion to roll back")
        earlier = [
            e.to_version
            for e in self.history(model)
            if e.alias == "champion" and e.to_version not in (None, current)
        ]
        if not earlier:
            msg = f"model {model!r}: no earlier champion than version {current}"
            raise RegistryError(msg)
        return self.move(
            model,
            "champion",
            earlier[-1],
            actor=actor,
            reason=reason,
            action="rollback",
        )


def _not_found(exc: MlflowException) -> bool:
    """MLflow's answer for an unknown model, or an alias that is not set."""
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
