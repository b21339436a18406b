"""Right to erasure: `forget` deletes one subject's rows from every layer.

An orchestration over the stages (lake, online store, prediction log, model
lineage), so it lives beside the runner, not inside one stage.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from aistack.contract import RankingUseCase, UseCase
from aistack.errors import ConfigError
from aistack.features.online import open_store
from aistack.governance.audit import audit_event
from aistack.governance.pii import PiiCipher
from aistack.lake.bronze import BATCH_ID, ROW
from aistack.lake.delta import Lake
from aistack.serving.log import prediction_log_table
from aistack.sql import quote
from aistack.training.tracking import ERASURE_TAG, LINEAGE_TAG
from aistack.workspace import Workspace


@dataclass
class ErasureResult:
    """What `forget` erased: rows per table (with the version after the delete),
    files vacuumed per table, online rows, and the models whose lineage lists it.

    It names no subject: the erasure id is what the audit log and the model
    lineage refer to.
    """

    use_case: str
    erasure_id: str
    erased_at: datetime
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    vacuumed_files: dict[str, int] = field(default_factory=dict)
    online_rows: int = 0
    models: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Rows deleted over every table."""
        return sum(self.rows.values())


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def subject_keys(use_case: UseCase | RankingUseCase) -> set[str]:
    """Columns identifying a subject: the PII columns declared `key`."""
    return {c for s in use_case.silver for c, mode in s.pii.items() if mode == "key"}


def forget(
    ws: Workspace,
    use_case: UseCase | RankingUseCase,
    subject_id: str,
    *,
    cipher: PiiCipher,
    now: datetime,
    principal: str = "local",
) -> ErasureResult:
    """Erase every row of one subject from bronze, silver, quarantine, gold,
    the prediction log and the online store, then vacuum the files holding them.

    `subject_id` is the value of a `key` PII column as the source carries it
    (e.g. the national id). Delta deletes commit new versions; vacuum (past
    settings `erasure_retention_hours`) removes the older files, so time travel
    no longer reaches the erased rows. Models trained on the data stay; their
    versions and runs get a tag listing the erasure.
    """
    keys = subject_keys(use_case)
    if not keys:
        msg = (
            f"{use_case.name}: no column declares pii='key', so no subject can "
            "be found; declare the subject's id column as pii='key'"
        )
        raise ConfigError(msg)
    result = ErasureResult(use_case.name, uuid.uuid4().hex, now)
    pseudonym = str(cipher.pseudonym([subject_id])[0])
    lake = ws.lake
    for spec in use_case.silver:
        spec_keys = [c for c, mode in spec.pii.items() if mode == "key"]
        if spec_keys:
            _erase_bronze(
                lake,
                f"bronze.{spec.source}",
                keys=spec_keys,
                subject_id=subject_id,
                cipher=cipher,
                result=result,
            )
    log = prediction_log_table(use_case) if isinstance(use_case, UseCase) else None
    for table in _derived_tables(lake, use_case, log):
        columns = set(lake.dataset(table).schema.names)
        matches = [
            f"{quote(c)} = {_literal(pseudonym)}" for c in sorted(keys & columns)
        ]
        if table == log and "payload" in columns:  # the request as served, JSON
            matches.append(f"{quote('payload')} LIKE {_literal(f'%{pseudonym}%')}")
        if matches:
            _delete(lake, table, " OR ".join(matches), result)
    store = open_store(ws.settings.online_url, ws.settings.workspace, use_case.name)
    for view in getattr(use_case, "views", ()):
        if view.entity in keys:
            result.online_rows += store.delete(view.name, [pseudonym])
    for table in result.versions:
        result.vacuumed_files[table] = lake.vacuum(
            table, retention_hours=ws.settings.erasure_retention_hours
        )
    _list_in_lineage(ws, result)
    audit_erasure(ws, result, principal)
    return result


def _derived_tables(
    lake: Lake, use_case: UseCase | RankingUseCase, log: str | None
) -> list[str]:
    own = {
        f"{layer}.{s.name}"
        for s in use_case.silver
        for layer in ("silver", "quarantine")
    }
    gold = f"gold.{use_case.name}_"
    return [
        t.name
        for t in lake.tables()
        if t.name in own or t.name.startswith(gold) or t.name == log
    ]


def _erase_bronze(
    lake: Lake,
    table: str,
    *,
    keys: list[str],
    subject_id: str,
    cipher: PiiCipher,
    result: ErasureResult,
) -> None:
    """Bronze holds the key encrypted (a fresh nonce per value): decrypt the key
    columns to find the subject's rows, then delete them by batch and row."""
    if not lake.exists(table):
        return
    present = [k for k in keys if k in lake.dataset(table).schema.names]
    data = lake.read(table, columns=[BATCH_ID, ROW, *present])
    hits: set[tuple[str, int]] = set()
    for key in present:
        clear = cipher.decrypt(data.column(key).to_pylist())
        batches, rows = data.column(BATCH_ID).to_pylist(), data.column(ROW).to_pylist()
        hits |= {
            (b, r)
            for b, r, v in zip(batches, rows, clear, strict=True)
            if v == subject_id
        }
    if hits:
        predicate = " OR ".join(
            f"({quote(BATCH_ID)} = {_literal(b)} AND {quote(ROW)} = {int(r)})"
            for b, r in sorted(hits)
        )
        _delete(lake, table, predicate, result)


def _delete(lake: Lake, table: str, predicate: str, result: ErasureResult) -> None:
    deleted, version = lake.delete(table, predicate)
    if deleted:
        result.rows[table] = deleted
        result.versions[table] = version


def _list_in_lineage(ws: Workspace, result: ErasureResult) -> None:
    """Tag every model version trained on an erased table (and its run)."""
    client = ws.registry.client
    record = json.dumps(
        {"erased_at": result.erased_at.isoformat(), "tables": result.versions},
        sort_keys=True,
    )
    touched = set(result.versions)
    tag = f"{ERASURE_TAG}.{result.erasure_id}"
    for mv in client.search_model_versions(f"name = {_literal(result.use_case)}"):
        if mv.run_id is None:
            continue
        run = client.get_run(mv.run_id)
        read = {
            t.removeprefix(f"{LINEAGE_TAG}.")
            for t in run.data.tags
            if t.startswith(LINEAGE_TAG)
        }
        if read & touched:
            client.set_model_version_tag(mv.name, mv.version, tag, record)
            client.set_tag(mv.run_id, tag, record)
            result.models.append(f"{mv.name} v{mv.version}")


def audit_erasure(ws: Workspace, result: ErasureResult, principal: str) -> None:
    """The erasure's record in the hash-chained audit log: who, the erasure id,
    rows per table; never the subject (the id is what lineage tags name)."""
    audit_event(
        ws.audit,
        principal,
        "erase",
        use_case=result.use_case,
        erasure_id=result.erasure_id,
        rows=result.rows,
        online_rows=result.online_rows,
        models=result.models,
    )
