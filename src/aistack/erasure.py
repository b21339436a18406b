"""Right to erasure: `forget` deletes one subject's rows from every layer.

An orchestration over the stages (lake, online store, prediction log, model
lineage), so it lives beside the runner, not inside one stage.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from aistack.contract import RankingUseCase, SilverTable, UseCase, Value
from aistack.errors import ConfigError
from aistack.features.online import open_store
from aistack.features.state import open_event_state
from aistack.governance.audit import audit_event
from aistack.governance.pii import PiiCipher
from aistack.lake.bronze import BATCH_ID, ROW
from aistack.lake.delta import Lake
from aistack.lake.silver import ACCOUNTING, checked_rows, reveal_pii
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
    state_events: int = 0
    """Events removed from the online aggregation state (every view)."""
    accounted_batches: int = 0
    """Batches whose `ops.batch_accounting` counts dropped by the erased rows."""
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
    in_state = _state_targets(lake, use_case, keys, pseudonym)  # before silver goes
    # per bronze and quarantine table, batch; per silver table, batch
    erased, replaced = _erase_bronze(lake, use_case, subject_id, cipher, result)
    log = prediction_log_table(use_case) if isinstance(use_case, UseCase) else None
    for table in _derived_tables(lake, use_case, log):
        columns = set(lake.dataset(table).schema.names)
        matches = [
            f"{quote(c)} = {_literal(pseudonym)}" for c in sorted(keys & columns)
        ]
        if table == log and "payload" in columns:  # the request as served, JSON
            matches.append(f"{quote('payload')} LIKE {_literal(f'%{pseudonym}%')}")
        if not matches:
            continue
        if table.startswith("quarantine."):
            erased[table] = _per_batch(lake, table, " OR ".join(matches))
        _delete(lake, table, " OR ".join(matches), result)
    store = open_store(ws.settings.online_url, ws.settings.workspace, use_case.name)
    for view in getattr(use_case, "views", ()):
        if view.entity in keys:
            result.online_rows += store.delete(view.name, [pseudonym])
    if in_state:
        state = open_event_state(
            ws.settings.online_url, ws.settings.workspace, use_case.name
        )
        for name, (entities, events) in in_state.items():
            result.state_events += state.erase(name, entities, events)
    result.accounted_batches = _recount(lake, use_case, erased, replaced)
    for table in result.versions:
        result.vacuumed_files[table] = lake.vacuum(
            table, retention_hours=ws.settings.erasure_retention_hours
        )
    _list_in_lineage(ws, result)
    audit_erasure(ws, result, principal)
    return result


def _state_targets(
    lake: Lake, use_case: UseCase | RankingUseCase, keys: set[str], pseudonym: str
) -> dict[str, tuple[list[str], list[tuple[str, Value]]]]:
    """Per aggregation view: the subject's own entity (a view keyed by a subject
    key), and (entity, event id) of the subject's events in silver, which other
    entities' windows hold (e.g. a clinic's visits)."""
    targets: dict[str, tuple[list[str], list[tuple[str, Value]]]] = {}
    for view in getattr(use_case, "aggregation_views", ()):
        own = [pseudonym] if view.entity in keys else []
        events: list[tuple[str, Value]] = []
        if lake.exists(view.source):
            match = sorted(keys & set(lake.dataset(view.source).schema.names))
            if match:
                con = lake.connect(lake.versions([view.source]))
                where = " OR ".join(f"{quote(c)} = $subject" for c in match)
                rows = con.sql(
                    f"SELECT CAST({quote(view.entity)} AS VARCHAR), {quote(view.id)} "
                    f"FROM {view.source} WHERE {where}",
                    params={"subject": pseudonym},
                ).fetchall()
                events = [(str(entity), ident) for entity, ident in rows]
        if own or events:
            targets[view.name] = (own, events)
    return targets


def _per_batch(lake: Lake, table: str, predicate: str) -> Counter[str]:
    """Rows of `table` matching `predicate`, per ingestion batch."""
    con = lake.connect(lake.versions([table]))
    rows = con.sql(
        f"SELECT {quote(BATCH_ID)}, count(*) FROM {table} WHERE {predicate} GROUP BY 1"
    ).fetchall()
    return Counter({str(batch): int(n) for batch, n in rows})


def _recount(
    lake: Lake,
    use_case: UseCase | RankingUseCase,
    erased: dict[str, Counter[str]],
    replaced: dict[str, Counter[str]],
) -> int:
    """Lower each touched batch's `ops.batch_accounting` counts by its erased
    rows, so bronze = silver + quarantine still holds per batch, and silver =
    silver_rows - replaced_rows per table; batches changed.

    Per silver table reading an erased bronze source: bronze_rows drop by the
    batch's erased bronze rows, quarantined_rows by its erased quarantine rows,
    silver_rows by the difference (the rows it had accepted), replaced_rows by
    the accepted ones that had replaced an earlier version (`replaced`).
    """
    if not lake.exists(ACCOUNTING):
        return 0
    accounting = lake.read(ACCOUNTING)
    fixed: list[dict[str, object]] = []
    for spec in use_case.silver:
        bronze = erased.get(f"bronze.{spec.source}")
        if not bronze:
            continue
        held = erased.get(f"quarantine.{spec.name}", Counter())
        newer = replaced.get(f"silver.{spec.name}", Counter())
        mine = accounting.filter(
            pc.and_(
                pc.equal(accounting["table"], f"silver.{spec.name}"),
                pc.is_in(accounting[BATCH_ID], pa.array(sorted(bronze))),
            )
        )
        for row in mine.to_pylist():
            batch = row[BATCH_ID]
            row["bronze_rows"] -= bronze[batch]
            row["quarantined_rows"] -= held[batch]
            row["silver_rows"] -= bronze[batch] - held[batch]
            if row.get("replaced_rows") is not None:  # null: counted before it was
                row["replaced_rows"] -= newer[batch]
            fixed.append(row)
    if fixed:
        lake.merge_matched(
            ACCOUNTING,
            pa.Table.from_pylist(fixed, schema=accounting.schema),
            key=("table", BATCH_ID),
            action="update",
        )
    return len(fixed)


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
    use_case: UseCase | RankingUseCase,
    subject_id: str,
    cipher: PiiCipher,
    result: ErasureResult,
) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Delete the subject's bronze rows; per bronze table the rows deleted per
    batch, and per latest-wins silver table those of them that had replaced an
    earlier version of their key, per batch (found before anything is deleted:
    two silver tables may read one source)."""
    erased: dict[str, Counter[str]] = {}
    replaced: dict[str, Counter[str]] = {}
    hits: dict[str, set[tuple[str, int]]] = {}  # per bronze table: (batch, row)
    for spec in use_case.silver:
        spec_keys = [c for c, mode in spec.pii.items() if mode == "key"]
        if not spec_keys:
            continue
        bronze = f"bronze.{spec.source}"
        found = _bronze_hits(
            lake, bronze, keys=spec_keys, subject_id=subject_id, cipher=cipher
        )
        replaced[f"silver.{spec.name}"] = _replacing(lake, spec, found, cipher=cipher)
        hits.setdefault(bronze, set()).update(found)
    for bronze, found in hits.items():
        if found:
            erased[bronze] = Counter(b for b, _ in found)
            _delete(lake, bronze, _rows_predicate(found), result)
    return erased, replaced


def _bronze_hits(
    lake: Lake, table: str, *, keys: list[str], subject_id: str, cipher: PiiCipher
) -> set[tuple[str, int]]:
    """The subject's rows in a bronze table, as (batch, row). Bronze holds the
    key encrypted (a fresh nonce per value): the key columns are decrypted."""
    if not lake.exists(table):
        return set()
    present = [k for k in keys if k in lake.dataset(table).schema.names]
    data = lake.read(table, columns=[BATCH_ID, ROW, *present])
    batches, rows = data.column(BATCH_ID).to_pylist(), data.column(ROW).to_pylist()
    hits: set[tuple[str, int]] = set()
    for key in present:
        clear = cipher.decrypt(data.column(key).to_pylist())
        hits |= {
            (b, r)
            for b, r, v in zip(batches, rows, clear, strict=True)
            if v == subject_id
        }
    return hits


def _rows_predicate(hits: set[tuple[str, int]]) -> str:
    return " OR ".join(
        f"({quote(BATCH_ID)} = {_literal(b)} AND {quote(ROW)} = {int(r)})"
        for b, r in sorted(hits)
    )


def _replacing(
    lake: Lake, spec: SilverTable, hits: set[tuple[str, int]], *, cipher: PiiCipher
) -> Counter[str]:
    """Latest-wins tables: per batch, the subject's bronze rows (`hits`) that
    silver accepted as a newer version of their key, i.e. its `replaced_rows`.

    Read before bronze is deleted. Rows quarantine holds (duplicate or stale
    versions) were never accepted; a key's accepted versions only grow (each is
    strictly newer than the last), so its oldest was its first and every other
    one replaced a version.
    """
    if spec.latest_by is None or not spec.key or not hits:
        return Counter()
    quarantine = f"quarantine.{spec.name}"
    in_batches = pc.field(BATCH_ID).isin(sorted({b for b, _ in hits}))
    near = in_batches & pc.field(ROW).isin(sorted({r for _, r in hits}))
    mine = pl.DataFrame(
        sorted(hits), schema={BATCH_ID: pl.String, ROW: pl.Int64}, orient="row"
    )
    raw = pl.DataFrame(lake.read(f"bronze.{spec.source}", where=near))
    raw = raw.join(mine, on=[BATCH_ID, ROW], how="semi", maintain_order="left")
    if lake.exists(quarantine):
        held = pl.DataFrame(lake.read(quarantine, columns=[BATCH_ID, ROW], where=near))
        raw = raw.join(held, on=[BATCH_ID, ROW], how="anti", maintain_order="left")
    if not raw.height:
        return Counter()
    typed, _ = checked_rows(reveal_pii(raw, spec, cipher), spec)
    versions = typed.select(*spec.key, spec.latest_by).with_columns(
        raw.get_column(BATCH_ID)
    )
    later = versions.sort(spec.latest_by, nulls_last=False, maintain_order=True).filter(
        pl.struct(spec.key).is_first_distinct().not_()
    )
    return Counter(dict(later.group_by(BATCH_ID).len().iter_rows()))


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
        state_events=result.state_events,
        accounted_batches=result.accounted_batches,
        models=result.models,
    )
