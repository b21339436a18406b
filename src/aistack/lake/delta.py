"""Delta tables under the workspace: the only place stages read and write storage.

Tables are named `layer.name` (`bronze.transactions`, `silver.transactions`,
`gold.<use case>_<purpose>`) and live at `<workspace>/tables/<layer>/<name>`.
Every write is one Delta commit, so a crash mid-write leaves the previous version.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    write_deltalake,
)
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound
from deltalake.transaction import (
    AddAction,
    RemoveAction,
    create_table_with_add_actions,
)

from aistack.errors import ConfigError, CorruptTableError, TableNotFoundError
from aistack.locks import file_lock
from aistack.sql import quote

log = logging.getLogger(__name__)

INPUTS_KEY = "aistack.inputs"
_PLAIN_READER_FEATURES = {"timestampNtz"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TableInfo:
    """One table as listed by `Lake.tables`."""

    name: str
    version: int
    rows: int
    path: Path


@dataclass(frozen=True)
class DataFile:
    """A Parquet file written into a table's folder, not yet committed.

    Invisible to readers until `Lake.commit_files` records it; an uncommitted file
    is garbage that `vacuum` removes, never a half-written version.
    """

    path: str  # relative to the table's folder
    size: int  # bytes
    rows: int
    stats: str  # Delta file statistics (JSON): numRecords, min/max, null counts
    modified_ms: int


def _stat(value: object) -> object:
    """A min/max value as Delta's JSON statistics spell it."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat(sep=" ", timespec="microseconds")
        utc = value.astimezone(UTC).replace(tzinfo=None)
        return utc.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def _file_stats(table: pa.Table) -> str:
    lows, highs, nulls = {}, {}, {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind):
            continue
        nulls[name] = column.null_count
        if column.null_count == len(column) or pa.types.is_boolean(kind):
            continue
        found = pc.min_max(column)
        low, high = found["min"].as_py(), found["max"].as_py()
        if isinstance(low, float) and (math.isnan(low) or math.isnan(high)):
            continue
        lows[name], highs[name] = _stat(low), _stat(high)
    stats = {
        "numRecords": table.num_rows,
        "minValues": lows,
        "maxValues": highs,
        "nullCount": nulls,
    }
    return json.dumps(stats)


def delta_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with every zoned timestamp in UTC, the only zone Delta stores
    (the instants are the same; DuckDB's Arrow output says "Etc/UTC")."""
    return pa.schema(
        [
            f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
            if pa.types.is_timestamp(f.type) and f.type.tz is not None
            else f
            for f in schema
        ],
        metadata=schema.metadata,
    )


def _commit_properties(inputs: Mapping[str, int | str] | None) -> CommitProperties:
    """A commit's properties: its inputs (table -> version), its lineage."""
    metadata = {INPUTS_KEY: json.dumps(dict(sorted((inputs or {}).items())))}
    return CommitProperties(custom_metadata=metadata)


def check_table_name(name: str) -> str:
    """Return `name` if it has the form `layer.name` in lower snake case."""
    if not _NAME.match(name):
        msg = f"table name {name!r}: expected 'layer.name' in lower snake case"
        raise ConfigError(msg)
    return name


class Lake:
    """The workspace's Delta tables, addressed by name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """Folder of table `name`."""
        layer, table = check_table_name(name).split(".")
        return self.root / layer / table

    def _table(self, name: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(str(self.path(name)), version=version)
        except DeltaTableNotFound as exc:
            msg = f"table {name} does not exist yet under {self.root}"
            raise TableNotFoundError(msg) from exc
        except DeltaError as exc:  # a damaged _delta_log: say which table, briefly
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            msg = (
                f"table {name} is unreadable ({first}); its log is at "
                f"{self.path(name) / '_delta_log'}: restore it from a backup or "
                "remove the damaged last commit file"
            )
            raise CorruptTableError(msg) from exc

    def exists(self, name: str) -> bool:
        """Whether table `name` has at least one committed version."""
        return (self.path(name) / "_delta_log").is_dir() and any(
            (self.path(name) / "_delta_log").glob("*.json")
        )

    def version(self, name: str) -> int | None:
        """Current version of `name`, or None when it does not exist."""
        return self._table(name).version() if self.exists(name) else None

    def versions(self, names: Iterable[str]) -> dict[str, int]:
        """Current version of each existing table: the lineage of a stage's inputs."""
        found = {n: self.version(n) for n in names}
        return {n: v for n, v in found.items() if v is not None}

    def dataset(self, name: str, *, version: int | None = None) -> pads.Dataset:
        """Arrow dataset of `name` (lazy; DuckDB and Arrow scan it)."""
        return self._table(name, version).to_pyarrow_dataset()

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        columns: list[str] | None = None,
        where: pc.Expression | None = None,
    ) -> pa.Table:
        """Read `name` (optionally at `version`) into memory; `where` filters while
        scanning (files and row groups whose statistics exclude it are skipped)."""
        return self.dataset(name, version=version).to_table(
            columns=columns, filter=where
        )

    def file_paths(self, name: str) -> list[str]:
        """Data files of the current version, relative to the table's folder."""
        actions = pa.table(self._table(name).get_add_actions(flatten=True))
        return [str(path) for path in actions.column("path").to_pylist()]

    def rows(self, name: str, *, version: int | None = None) -> int:
        """Row count from the Delta log's file statistics (no data scan)."""
        actions = pa.table(self._table(name, version).get_add_actions(flatten=True))
        return int(pc.sum(actions.column("num_records")).as_py() or 0)

    def write(
        self,
        name: str,
        data: pa.Table | pa.RecordBatchReader,
        *,
        mode: Literal["append", "overwrite"],
        inputs: Mapping[str, int | str] | None = None,
        merge_schema: bool = False,
        return_version: bool = True,
        predicate: str | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> int:
        """Commit `data` to `name` in one transaction and return the new version.

        `inputs` (table -> version) is stored on the commit: it is the lineage of
        the write and lets a stage see that it already ran on the same inputs.
        `merge_schema` lets an append (bronze only) or a predicate overwrite
        add new columns (absent ones are then null). With
        `predicate` (SQL over the table's columns) an overwrite replaces only the
        rows it matches, and every row of `data` must match it; the replaced rows
        stay readable in earlier versions. `configuration`: Delta table
        properties of a table this write creates.
        """
        path = self.path(name)
        path.mkdir(parents=True, exist_ok=True)
        commit = _commit_properties(inputs)
        if predicate is not None:
            if mode != "overwrite":
                raise ValueError("a predicate only narrows an overwrite")
            write_deltalake(
                str(path),
                data,
                mode="overwrite",
                predicate=predicate,
                schema_mode="merge" if merge_schema else None,
                commit_properties=commit,
            )
        else:
            write_deltalake(
                str(path),
                data,
                mode=mode,
                schema_mode="overwrite"
                if mode == "overwrite"
                else ("merge" if merge_schema else None),
                commit_properties=commit,
                configuration=None if configuration is None else dict(configuration),
            )
        # reading the version reopens the table: skipped on hot paths (-1)
        return self._table(name).version() if return_version else -1

    def appender(self, name: str, *, stats: Sequence[str] | None = None) -> Appender:
        """A handle that appends to `name` again and again (logs: see `Appender`)."""
        return Appender(self, name, stats=stats)

    def write_file(self, name: str, data: pa.Table) -> DataFile | None:
        """Write `data` as one Parquet file into table `name`'s folder, uncommitted.

        Cluster workers call this on their partition; `commit_files` then records
        every file in one commit. Nothing is written for an empty partition.
        """
        if data.num_rows == 0:
            return None
        data = data.cast(delta_schema(data.schema))
        path = self.path(name)
        path.mkdir(parents=True, exist_ok=True)
        relative = f"part-{uuid.uuid4()}.parquet"
        pq.write_table(data, path / relative, compression="snappy")
        stat = (path / relative).stat()
        return DataFile(
            relative,
            stat.st_size,
            data.num_rows,
            _file_stats(data),
            int(stat.st_mtime * 1000),
        )

    def commit_files(
        self,
        name: str,
        files: Iterable[DataFile],
        *,
        schema: pa.Schema,
        inputs: Mapping[str, int | str] | None = None,
    ) -> int:
        """Record already written files as one append commit; return the version.

        The same atomicity as `write`: readers see every file or none. An empty
        list still commits, so the inputs are recorded and the next run can skip.
        """
        actions = [
            AddAction(f.path, f.size, {}, f.modified_ms, True, f.stats) for f in files
        ]
        commit = _commit_properties(inputs)
        if not self.exists(name):
            self.path(name).mkdir(parents=True, exist_ok=True)
            create_table_with_add_actions(
                str(self.path(name)),
                DeltaSchema.from_arrow(schema),
                actions,
                mode="append",
                commit_properties=commit,
            )
        else:
            changes: list[AddAction | RemoveAction] = [*actions]
            self._table(name).create_write_transaction(
                changes, mode="append", schema=schema, commit_properties=commit
            )
        return self._table(name).version()

    def upsert(
        self,
        name: str,
        data: pa.Table,
        *,
        key: Iterable[str],
        newer: str,
        inputs: Mapping[str, int | str] | None = None,
    ) -> int:
        """Merge `data` into `name` in one commit: a row replaces the row of its key
        only when its `newer` column is after the current one; new keys insert.

        `data` holds one row per key. Re-running the same merge changes nothing.
        """
        if not self.exists(name):
            return self.write(name, data, mode="append", inputs=inputs)
        on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in key)
        col = quote(newer)
        (
            self._table(name)
            .merge(
                data,
                predicate=on,
                source_alias="s",
                target_alias="t",
                commit_properties=_commit_properties(inputs),
            )
            .when_matched_update_all(predicate=f"t.{col} IS NULL OR s.{col} > t.{col}")
            .when_not_matched_insert_all()
            .execute()
        )
        return self._table(name).version()

    def merge_matched(
        self,
        name: str,
        data: pa.Table,
        *,
        key: Iterable[str],
        action: Literal["update", "delete"],
        inputs: Mapping[str, int | str] | None = None,
    ) -> int:
        """In one commit, update (to `data`'s values) or delete the rows of `name`
        whose `key` matches a row of `data`; other rows are untouched. Re-applying
        the same merge changes nothing."""
        on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in key)
        merger = self._table(name).merge(
            data,
            predicate=on,
            source_alias="s",
            target_alias="t",
            commit_properties=_commit_properties(inputs),
        )
        if action == "update":
            merger = merger.when_matched_update_all()
        else:
            merger = merger.when_matched_delete()
        merger.execute()
        return self._table(name).version()

    def delete(self, name: str, predicate: str) -> tuple[int, int]:
        """Delete the rows matching `predicate` (SQL) in one commit.

        Returns (rows deleted, version after). Deleted rows stay in the files of
        earlier versions until `vacuum` removes them. Holds the table's rewrite
        lock: a compaction committed beside a delete could bring the deleted
        rows back (deltalake commits both; see `compact`).
        """
        with file_lock(rewrite_lock(self, name)):  # not beside a compaction
            metrics = self._table(name).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0)), self._table(name).version()

    def vacuum(self, name: str, *, retention_hours: float) -> int:
        """Remove files no longer in the current version and older than
        `retention_hours` (0: every one, so older versions stop being readable).
        Returns how many files were removed."""
        table = self._table(name)
        removed = table.vacuum(
            retention_hours=int(retention_hours),
            enforce_retention_duration=False,
            dry_run=False,
        )
        table.cleanup_metadata()  # log entries past the log retention (`Appender`)
        return len(removed)

    def last_inputs(self, name: str) -> dict[str, int | str] | None:
        """Inputs recorded on the latest commit of `name`, None if none were."""
        if not self.exists(name):
            return None
        history = self._table(name).history(1)
        raw = history[0].get(INPUTS_KEY) if history else None
        return None if raw is None else dict(json.loads(raw))

    def distinct(self, name: str, column: str) -> set[str]:
        """Distinct values of one column (e.g. the batch ids a table holds)."""
        if not self.exists(name):
            return set()
        con = self.connect({name: self._table(name).version()})
        query = f"SELECT DISTINCT {quote(column)} FROM {name}"
        return {row[0] for row in con.execute(query).fetchall()}

    def tables(self) -> list[TableInfo]:
        """Every table in the workspace with its version and row count."""
        found = []
        for log in sorted(self.root.glob("*/*/_delta_log")):
            name = f"{log.parent.parent.name}.{log.parent.name}"
            if _NAME.match(name) and self.exists(name):
                found.append(
                    TableInfo(
                        name, self.version(name) or 0, self.rows(name), log.parent
                    )
                )
        return found

    def column_range(
        self, name: str, column: str, *, version: int | None = None
    ) -> tuple[object, object] | None:
        """(min, max) of a column from the Delta log's file statistics (no scan)."""
        actions = pa.table(self._table(name, version).get_add_actions(flatten=True))
        low, high = f"min.{column}", f"max.{column}"
        if actions.num_rows == 0 or low not in actions.column_names:
            return None
        return pc.min(actions.column(low)).as_py(), pc.max(actions.column(high)).as_py()

    def connect(
        self,
        versions: Mapping[str, int],
        *,
        where: Mapping[str, str] | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection where each table is a view `layer.name` at a version.

        `where` narrows tables to the rows of a SQL condition (a cluster task's
        entity-hash partition): the view then holds only those rows.

        Plain tables are scanned by DuckDB's own Parquet reader over the version's
        files (measured ~600 MB less than an Arrow dataset scan at 1.8 M rows);
        tables using Delta reader features beyond timestampNtz (deletion
        vectors, column mapping) go through delta-rs' Arrow dataset.
        """
        con = duckdb.connect()
        for name, version in versions.items():
            layer, table = name.split(".")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
            delta = self._table(name, version)
            features = set(delta.protocol().reader_features or ())
            files = delta.file_uris()
            cond = (where or {}).get(name)
            only = f" WHERE {cond}" if cond else ""
            if files and features <= _PLAIN_READER_FEATURES:
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(
                    f"CREATE OR REPLACE VIEW {layer}.{table} AS "
                    f"FROM read_parquet([{listed}], union_by_name = true){only}"
                )
                continue
            alias = f"_{layer}_{table}"
            con.register(alias, delta.to_pyarrow_dataset())
            con.execute(f"CREATE OR REPLACE VIEW {layer}.{table} AS FROM {alias}{only}")
        return con


_HOT_HOOKS = PostCommitHookProperties(
    create_checkpoint=True, cleanup_expired_logs=False
)
COMPACT_EVERY = 100  # appends between two compactions of an appended table
COMPACT_TARGET = 16 * 2**20  # files an appender's compaction leaves alone
_STATS_COLUMNS = "delta.dataSkippingStatsColumns"


class _Busy(Exception):
    pass


def rewrite_lock(lake: Lake, name: str) -> Path:
    """The lock file of operations that rewrite `name`'s files (compactions,
    deletes), one at a time."""
    return lake.root.parent / ".locks" / f"rewrite-{name}.lock"


def compact(
    lake: Lake, name: str, *, wait: bool = True, target_bytes: int | None = None
) -> dict[str, Any] | None:
    """Compact `name`'s small files (`optimize.compact`, one core): its metrics,
    None when it did not run. Compactions of one table are serialised by a
    lock file of the lake (`wait=False`: skip when another one runs, the
    appenders' way): deltalake 1.6 commits two
    concurrent compactions of the same files both, which duplicates their
    rows (measured: 80 appended rows read back as 585). `target_bytes`: files
    from that size on are left as they are (deltalake's default: 100 MiB)."""
    try:
        with file_lock(rewrite_lock(lake, name), refuse=None if wait else _Busy):
            return lake._table(name).optimize.compact(
                target_size=target_bytes,
                max_concurrent_tasks=1,  # one core: the appenders keep the other
                commit_properties=_commit_properties(None),
                post_commithook_properties=_HOT_HOOKS,
            )
    except _Busy:
        return None


class Appender:
    """Appends to one table through a table handle kept open: the hot path of
    the prediction log (stream commits, server flushes).

    A commit through the kept handle reads only the versions since its previous
    one (concurrent appenders commit in between: appends never conflict), where
    `Lake.write` loads the table again, and it skips the expired-log cleanup
    (`Lake.vacuum` does it): about 40 % less CPU per commit
    (`bench/log_appends.py`). The table is created by the first append when it
    does not exist yet.

    Each commit adds a file, and a Delta commit costs more the more files the
    table holds (deltalake 1.6, 100-row appends: 11 ms a commit over the first
    250, 175 ms at 3,000; a stream consumer committing 20 micro-batches a
    second fell from 9,400 to 3,000 events/s within a minute). So every
    `compact_every` commits of this appender, a background thread compacts the
    table's small files (`optimize.compact`: the same rows, in fewer files, one
    commit; appends going on meanwhile never conflict with it). A compaction
    that loses to another one (two appenders of one table) is simply skipped.
    It leaves files of 16 MiB and more alone: with deltalake's default target
    (100 MiB) every compaction rewrote the whole log again (2,000 commits of
    400 prediction rows: 37 s of compaction CPU, 19 ms a commit), with 8 MiB
    13 s, but a commit also costs about 0.1 ms more per file the table holds.

    `stats`: the only columns whose statistics (min, max, nulls) each commit
    records for data skipping (`delta.dataSkippingStatsColumns`, set on the
    table). deltalake computes them for the first 32 columns by default: 7 of
    the 16 ms of CPU a 400-row commit of the prediction log took (32 columns,
    JSON text among them); our own reads go through DuckDB's Parquet reader,
    which does not use them.
    """

    def __init__(
        self,
        lake: Lake,
        name: str,
        *,
        compact_every: int = COMPACT_EVERY,
        compact_target: int | None = COMPACT_TARGET,
        stats: Sequence[str] | None = None,
    ) -> None:
        self._lake = lake
        self._name = name
        self._table: DeltaTable | None = None
        self._compact_every = compact_every
        self._compact_target = compact_target
        self.compaction_seconds = 0.0  # wall time of the compactions run
        self._since = 0
        self._compactor: threading.Thread | None = None
        self.compactions = 0
        self._config = None if stats is None else {_STATS_COLUMNS: ",".join(stats)}

    def append(self, data: pa.Table) -> None:
        """Commit `data` (new columns merged into the schema) in one transaction."""
        self._append(data)
        self._since += 1
        if self._compact_every and self._since >= self._compact_every:
            self._compact()

    def _append(self, data: pa.Table) -> None:
        if self._table is None:
            if not self._lake.exists(self._name):
                self._lake.write(
                    self._name,
                    data,
                    mode="append",
                    merge_schema=True,
                    return_version=False,
                    configuration=self._config,
                )
                self._table = self._lake._table(self._name)
                return
            self._table = self._lake._table(self._name)
            self._configure(self._table)
        try:
            self._commit(self._table, data)
        except CommitFailedError:  # another writer changed the schema meanwhile
            self._table = self._lake._table(self._name)
            self._commit(self._table, data)
        except Exception:
            self._table = None  # opened again, from disk, by the next append
            raise

    def _configure(self, table: DeltaTable) -> None:
        """Set the table properties on a table created before they were set."""
        if self._config is None:
            return
        held = table.metadata().configuration
        if all(held.get(k) == v for k, v in self._config.items()):
            return
        try:
            table.alter.set_table_properties(self._config, raise_if_not_exists=False)
        except (CommitFailedError, DeltaError) as exc:  # another appender did
            log.info("table properties of %s not set: %s", self._name, exc)
        table.update_incremental()

    def _compact(self) -> None:
        """Start compacting in the background (unless a compaction still runs)."""
        if self._compactor is not None and self._compactor.is_alive():
            return
        self._since = 0
        # not a daemon: the interpreter's exit waits for it (a daemon thread
        # inside deltalake at exit crashed the process)
        self._compactor = threading.Thread(
            target=self._compact_now, name=f"compact {self._name}"
        )
        self._compactor.start()

    def _compact_now(self) -> None:
        start = time.perf_counter()
        try:
            compacted = compact(
                self._lake, self._name, wait=False, target_bytes=self._compact_target
            )
        except (CommitFailedError, DeltaError) as exc:
            log.warning("compaction of %s failed: %s", self._name, exc)
        else:
            self.compactions += compacted is not None
        self.compaction_seconds += time.perf_counter() - start

    def wait(self) -> None:
        """Until a running compaction has finished (tests, shutdown)."""
        if self._compactor is not None:
            self._compactor.join()

    @staticmethod
    def _commit(table: DeltaTable, data: pa.Table) -> None:
        write_deltalake(
            table,
            data,
            mode="append",
            schema_mode="merge",
            commit_properties=_commit_properties(None),
            post_commithook_properties=_HOT_HOOKS,
        )
