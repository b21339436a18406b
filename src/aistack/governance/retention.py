"""Retention: how long each kind of table keeps its rows, enforced by `vacuum`.

Rows older than the kind's retention are deleted (a Delta delete), small files
are compacted, and files no version has referenced for the retention period
are removed (Delta vacuum), so a deleted row leaves the disk one retention
period after its delete at the latest; newer versions stay readable by time
travel for that long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from deltalake import DeltaTable

from aistack.lake.delta import Lake, compact

TIME_COLUMNS = {"prediction_log": "logged_at", "quarantine": "_ingested_at"}
"""The column whose age decides retention, per kind of Delta table."""


@dataclass(frozen=True)
class Vacuumed:
    """What `expire` did to one table."""

    table: str
    kind: str
    deleted_rows: int
    compacted_files: int
    removed_files: int


def kind_of(table: str) -> str | None:
    """The retention kind of a table name (None: not governed by retention)."""
    if table.startswith("ops.") and table.endswith("_prediction_log"):
        return "prediction_log"
    if table.startswith("quarantine."):
        return "quarantine"
    return None


def expire(lake: Lake, table: str, *, days: float, now: datetime) -> Vacuumed:
    """Delete rows older than `days`, compact small files, vacuum past retention."""
    kind = kind_of(table)
    assert kind is not None, f"{table}: no retention kind"
    column = TIME_COLUMNS[kind]
    dt = DeltaTable(str(lake.path(table)))
    names = dt.schema().to_arrow().names
    if column not in names:
        msg = f"table {table}: no column {column!r} to date its rows for retention"
        raise KeyError(msg)
    cutoff = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
    deleted, _ = lake.delete(table, f"`{column}` < '{cutoff}'")
    compacted = compact(lake, table) or {}
    dt = DeltaTable(str(lake.path(table)))  # at the compacted version
    removed = dt.vacuum(
        retention_hours=int(days * 24),
        dry_run=False,
        enforce_retention_duration=False,
    )
    dt.cleanup_metadata()  # log entries past the log retention: hot appends skip it
    return Vacuumed(
        table,
        kind,
        deleted,
        int(compacted.get("numFilesRemoved", 0)),
        len(removed),
    )
