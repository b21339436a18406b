"""Trace one served request: prediction -> model version -> run -> input tables
-> who promoted that version, and when; plus who asked (the audit log)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from aistack.errors import ConfigError
from aistack.governance.audit import audit_path
from aistack.governance.audit import read as read_audit
from aistack.registry.aliases import AliasEvent
from aistack.training.tracking import lineage_of, tracking
from aistack.workspace import Workspace

_LOG_SUFFIXES = ("_prediction_log", "_recommendation_log")  # scores, rankings


@dataclass(frozen=True)
class Trace:
    """Everything one served request depended on."""

    request_id: str
    use_case: str
    logged_at: datetime
    score: float | None
    model_version: int
    run_id: str | None
    inputs: dict[str, int]
    promotion: AliasEvent | None
    requested_by: str | None


def _prediction(ws: Workspace, request_id: str) -> tuple[str, dict[str, Any]]:
    """The use case and logged row of `request_id`: in a prediction log (HTTP
    and stream answers) or a recommendation log (ranked items: no score)."""
    for info in ws.lake.tables():
        suffix = next((s for s in _LOG_SUFFIXES if info.name.endswith(s)), None)
        if not info.name.startswith("ops.") or suffix is None:
            continue
        dataset = ws.lake.dataset(info.name)
        wanted = ["logged_at", "score", "model_name", "model_version"]
        rows = dataset.to_table(
            filter=pc.field("request_id") == request_id,
            columns=[c for c in wanted if c in dataset.schema.names],
        )
        if rows.num_rows:
            use_case = info.name.removeprefix("ops.").removesuffix(suffix)
            return use_case, {"score": None, **rows.to_pylist()[0]}
    msg = f"request id {request_id}: in no prediction log (flushed every few seconds)"
    raise ConfigError(msg)


def trace(ws: Workspace, request_id: str) -> Trace:
    """The trace of `request_id`, read from the prediction log, MLflow, the alias
    history and the audit log."""
    use_case, row = _prediction(ws, request_id)
    model, version = row["model_name"], int(row["model_version"])
    with tracking(ws.settings.mlflow_uri):
        run_id = ws.registry.client.get_model_version(model, str(version)).run_id
        inputs = lineage_of(run_id) if run_id else {}
    promoted = [
        e
        for e in ws.registry.history(model)
        if e.alias == "champion"
        and e.to_version == version
        and e.at <= row["logged_at"]
    ]
    asked = next(
        (
            r["principal"]
            for r in read_audit(audit_path(ws.settings))
            if r["action"] == "predict" and r["details"].get("request_id") == request_id
        ),
        None,
    )
    return Trace(
        request_id,
        use_case,
        row["logged_at"],
        row["score"],
        version,
        run_id,
        inputs,
        promoted[-1] if promoted else None,
        asked,
    )
