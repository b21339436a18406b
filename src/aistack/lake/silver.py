"""Silver: typed, deduplicated, validated rows; every rejected row to quarantine.

For each bronze batch not yet accounted for, rows are split into trusted silver
rows and quarantined raw rows carrying the column, the failed check and the
reason. Before anything is written, rows(bronze batch) = rows(silver) +
rows(quarantine) is checked per batch; the counts are recorded in
`ops.batch_accounting`, with `replaced_rows` (rows of the batch that replaced an
earlier version of their key, latest-wins tables only), so that rows(silver) =
sum(silver_rows) - sum(replaced_rows). Writes go quarantine, silver, accounting,
each skipping batches it already holds (a latest-wins merge changes nothing when
re-applied), so a run killed between two commits completes on re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import pairwise
from typing import Any, Protocol, TypeVar

import duckdb
import numpy as np
import pandera.errors
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aistack.contract import PiiCodec, SilverTable
from aistack.errors import ConfigError, ContractError, DeclarationError
from aistack.lake.bronze import BATCH_ID, INGESTED_AT, METADATA_COLUMNS, ROW, SOURCE
from aistack.lake.delta import DataFile, Lake
from aistack.sql import quote

ACCOUNTING = "ops.batch_accounting"
CHUNK_ROWS = 100_000
ORDER = (INGESTED_AT, BATCH_ID, ROW)  # bronze order: unique per row
_POS = "_pos"


T = TypeVar("T")


class Engine(Protocol):
    """Where silver's row checks may run: what the lake needs of an engine
    (`aistack.engine` provides it; the lake sits before the engine in the flow)."""

    @property
    def partitions(self) -> int:
        """How many parts to split work into."""
        ...

    @property
    def distributed(self) -> bool:
        """Whether calls run in other processes (a cluster)."""
        ...

    def map(self, fn: Callable[..., T], items: Sequence[Any]) -> list[T]:
        """`[fn(item) for item in items]`, wherever this engine runs work."""
        ...


@dataclass
class SilverResult:
    """What one silver build did for one table."""

    table: str
    batches: int = 0
    bronze_rows: int = 0
    silver_rows: int = 0
    quarantined_rows: int = 0
    by_check: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def silver_table(spec: SilverTable) -> str:
    """Silver table name of a spec."""
    return f"silver.{spec.name}"


def quarantine_table(spec: SilverTable) -> str:
    """Quarantine table name of a spec."""
    return f"quarantine.{spec.name}"


def _parse(raw: pl.Series, dtype: pl.DataType) -> pl.Series:
    if raw.dtype == dtype:
        return raw
    if raw.dtype == pl.String:
        text = raw.str.strip_chars()
        if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
            return text.str.to_datetime(strict=False, time_unit="us")
        if dtype == pl.Date:
            return text.str.to_date(strict=False)
        if dtype == pl.Boolean:
            lowered = text.str.to_lowercase()
            truth = {"true": True, "1": True, "false": False, "0": False}
            return lowered.replace_strict(truth, default=None, return_dtype=pl.Boolean)
    return raw.cast(dtype, strict=False)


def _failures(
    pos: pl.Series, column: str, check: str, reason: pl.Series
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            _POS: pos.cast(pl.Int64),
            "column": pl.Series([column] * len(pos), dtype=pl.String),
            "check": pl.Series([check] * len(pos), dtype=pl.String),
            "reason": reason.cast(pl.String),
        }
    )


def _type_columns(
    payload: pl.DataFrame, spec: SilverTable, n: int
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    failures = []
    typed: dict[str, pl.Series] = {}
    positions = pl.Series(range(n), dtype=pl.Int64)
    for name, dtype in spec.columns.items():
        if name not in payload.columns and name in spec.optional_columns:
            typed[name] = pl.Series(name, [None] * n, dtype=dtype)
            continue
        if name not in payload.columns:
            reason = pl.Series([f"column {name!r} is missing"] * n)
            failures.append(_failures(positions, name, "column_present", reason))
            typed[name] = pl.Series(name, [None] * n, dtype=dtype)
            continue
        raw = payload.get_column(name)
        parsed = _parse(raw, dtype).alias(name)
        bad = raw.is_not_null() & parsed.is_null()
        if bad.any():
            values = raw.filter(bad).cast(pl.String)
            reason = (
                f"column {name!r}: cannot parse "
                + values.map_elements(repr, return_dtype=pl.String)
                + f" as {dtype}"
            )
            failures.append(
                _failures(positions.filter(bad), name, f"dtype({dtype})", reason)
            )
        typed[name] = parsed
    return pl.DataFrame(typed), failures


def _contract_failures(
    typed: pl.DataFrame, spec: SilverTable, n: int
) -> list[pl.DataFrame]:
    try:
        spec.contract.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = pl.DataFrame(exc.failure_cases).with_columns(
            pl.col("failure_case").cast(pl.String)
        )
    else:
        return []
    found = []
    rows = cases.filter(pl.col("index").is_not_null())
    if rows.height:
        found.append(
            rows.select(
                pl.col("index").cast(pl.Int64).alias(_POS),
                pl.col("column").fill_null(""),
                pl.col("check"),
                pl.format(
                    "column '{}' failed {} (value {})",
                    pl.col("column").fill_null(""),
                    pl.col("check"),
                    pl.col("failure_case").fill_null("null"),
                ).alias("reason"),
            )
        )
    positions = pl.Series(range(n), dtype=pl.Int64)
    for case in cases.filter(pl.col("index").is_null()).iter_rows(named=True):
        column = case["column"] or ""
        reason = f"{case['check']} failed for the batch: {case['failure_case']}"
        found.append(
            _failures(positions, column, case["check"], pl.Series([reason] * n))
        )
    return found


def checked_rows(
    raw: pl.DataFrame, spec: SilverTable
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The row-wise part of validation: transformed, typed rows and the failures
    of typing and of the contract (row positions in `raw`). Pure: no I/O."""
    n = raw.height
    payload = raw.drop([c for c in METADATA_COLUMNS if c in raw.columns])
    transformed = spec.transform(payload)
    if transformed.height != n:
        msg = (
            f"silver.{spec.name}: transform returned {transformed.height} rows for "
            f"{n}; a transform must return one row per input row, in order"
        )
        raise DeclarationError(msg)
    typed, failures = _type_columns(transformed, spec, n)
    failures += _contract_failures(typed, spec, n)
    return typed, failures


def validate_rows(
    raw: pl.DataFrame,
    spec: SilverTable,
    *,
    existing_keys: pl.DataFrame | None = None,
    references: Mapping[str, pl.Series] | None = None,
    checked: tuple[pl.DataFrame, list[pl.DataFrame]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split bronze rows into (silver rows, quarantined raw rows with reasons).

    Pure: no I/O. `existing_keys` are keys already in silver (a repeat is a
    duplicate), with their `latest_by` version when the spec declares one (a
    newer version is an update); `references` maps a column to the values it may
    take. `checked` is `checked_rows(raw, spec)` when computed elsewhere (on a
    cluster's workers); keys and references are checked here, over all rows.
    """
    typed, failures = checked if checked is not None else checked_rows(raw, spec)
    failed = pl.concat(failures).get_column(_POS).unique() if failures else None
    indexed = typed.with_row_index(_POS).with_columns(pl.col(_POS).cast(pl.Int64))
    alive = (
        indexed
        if failed is None
        else indexed.filter(~pl.col(_POS).is_in(failed.implode()))
    )
    if spec.key and spec.latest_by is not None:
        failures += _stale_versions(alive, spec, existing_keys)
    elif spec.key:
        key = list(spec.key)
        repeated = alive.filter(pl.struct(key).is_first_distinct().not_())
        if existing_keys is not None and existing_keys.height:
            known = alive.join(existing_keys.select(key), on=key, how="semi")
            repeated = pl.concat([repeated, known]).unique(_POS)
        if repeated.height:
            # few rows: plain Python (pl.format over this frame hits a polars
            # string-view panic in 2.1)
            reasons = pl.Series(
                [
                    f"duplicate key ({', '.join(map(str, k))}) already seen"
                    for k in repeated.select(key).rows()
                ],
                dtype=pl.String,
            )
            failures.append(
                _failures(
                    repeated.get_column(_POS), ",".join(key), "duplicate_key", reasons
                )
            )
    for column, allowed in (references or {}).items():
        target = spec.references[column]
        unknown = alive.filter(
            pl.col(column).is_not_null() & ~pl.col(column).is_in(allowed.implode())
        )
        if unknown.height:
            reason = pl.format(
                f"column '{column}': {{}} is not in {target}", pl.col(column)
            )
            failures.append(
                _failures(
                    unknown.get_column(_POS),
                    column,
                    "foreign_key",
                    unknown.select(reason).to_series(),
                )
            )
    return _split(raw, typed, failures)


_CURRENT = "_current_version"


def _stale_versions(
    alive: pl.DataFrame, spec: SilverTable, existing: pl.DataFrame | None
) -> list[pl.DataFrame]:
    """Latest-wins mode: rows not strictly newer than their key's current version.

    In bronze order, a row is accepted when its key is new (first row) or its
    version is after every earlier one of the key (in silver or before it in
    the build; no version is the oldest); the others are duplicates (same or no
    version) or stale (older).
    """
    key, version = list(spec.key), str(spec.latest_by)
    rows = alive.select(_POS, *key, version)
    current = _known_keys(existing, rows, key)
    if current is not None:
        current = current.select(
            *key, pl.col(version).alias(_CURRENT), pl.lit(True).alias("_known")
        )
        rows = rows.join(current, on=key, how="left", maintain_order="left")
    else:
        rows = rows.with_columns(
            pl.lit(None, rows.schema[version]).alias(_CURRENT),
            pl.lit(None, pl.Boolean).alias("_known"),
        )
    # windows per key only over keys that repeat in the chunk (few): a window
    # over millions of one-row groups costs more than the rest of silver
    repeats = (
        pl.struct(key).is_duplicated()
        if len(key) > 1
        else pl.col(key[0]).is_duplicated()
    )
    rows = rows.with_columns(repeats.alias("_repeats"))
    single = rows.filter(~pl.col("_repeats")).with_columns(
        pl.col(_CURRENT).alias("_before"), pl.lit(True).alias("_first")
    )
    earlier = pl.col(version).cum_max().shift(1).over(key)
    multi = (
        rows.filter(pl.col("_repeats"))
        .sort(_POS)
        .with_columns(
            pl.max_horizontal(earlier, pl.col(_CURRENT)).alias("_before"),
            (pl.int_range(pl.len()).over(key) == 0).alias("_first"),
        )
    )
    rows = pl.concat([single, multi], how="vertical_relaxed").sort(_POS)
    rows = rows.with_columns(pl.col("_known").fill_null(False))
    # a version is newer than none (nulls are oldest), never the other way round
    newer = pl.col(version).is_not_null() & (
        pl.col("_before").is_null() | (pl.col(version) > pl.col("_before"))
    )
    rejected = rows.filter(~((pl.col("_first") & ~pl.col("_known")) | newer))
    if not rejected.height:
        return []
    stale = (pl.col(version) < pl.col("_before")).fill_null(False)
    found = []
    for check, rows_of in (("stale_version", stale), ("duplicate_key", ~stale)):
        picked = rejected.filter(rows_of)
        if not picked.height:
            continue
        reasons = pl.Series(
            [
                (
                    f"stale version of key ({', '.join(map(str, k[:-2]))}): "
                    f"{version} {k[-2]} is older than the current {k[-1]}"
                    if check == "stale_version"
                    else f"duplicate key ({', '.join(map(str, k[:-2]))}) already "
                    f"seen: {version} {k[-2]} is not after {k[-1]}"
                )
                for k in picked.select(*key, version, "_before").rows()
            ],
            dtype=pl.String,
        )
        found.append(_failures(picked.get_column(_POS), ",".join(key), check, reasons))
    return found


def _split(
    raw: pl.DataFrame, typed: pl.DataFrame, failures: list[pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    meta = raw.select(BATCH_ID, INGESTED_AT)
    good = pl.concat([typed, meta], how="horizontal").with_row_index(_POS)
    if not failures:
        return good.drop(_POS), raw.clear().with_columns(
            pl.lit(None, pl.String).alias(c) for c in ("_column", "_check", "_reason")
        )
    reasons = (
        pl.concat(failures)
        .unique([_POS, "column", "check"], keep="first", maintain_order=True)
        .group_by(_POS, maintain_order=True)
        .agg(
            pl.col("column").str.join("; ").alias("_column"),
            pl.col("check").str.join("; ").alias("_check"),
            pl.col("reason").str.join("; ").alias("_reason"),
        )
    )
    bad_pos = reasons.get_column(_POS)
    bad = (
        raw.with_row_index(_POS)
        .with_columns(pl.col(_POS).cast(pl.Int64))
        .join(reasons, on=_POS, how="inner")
        .sort(_POS)
        .drop(_POS)
    )
    good = good.with_columns(pl.col(_POS).cast(pl.Int64)).filter(
        ~pl.col(_POS).is_in(bad_pos.implode())
    )
    return good.drop(_POS), bad


def _chunks(
    con: duckdb.DuckDBPyConnection, bronze: str, batches: list[str]
) -> list[list[str]]:
    """Groups of whole batches of about CHUNK_ROWS rows: bounded memory per step."""
    counted = con.sql(
        f"SELECT {BATCH_ID}, count(*) FROM {bronze} "
        f"WHERE {BATCH_ID} IN (SELECT unnest($batches)) GROUP BY ALL",
        params={"batches": batches},
    ).fetchall()
    sizes = {str(batch): int(n) for batch, n in counted}
    chunks: list[list[str]] = [[]]
    rows = 0
    for batch in batches:
        if chunks[-1] and rows + sizes.get(batch, 0) > CHUNK_ROWS:
            chunks.append([])
            rows = 0
        chunks[-1].append(batch)
        rows += sizes.get(batch, 0)
    return chunks


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a Table always converts to a frame
    return frame


def _accounted(lake: Lake, table: str) -> set[str]:
    if not lake.exists(ACCOUNTING):
        return set()
    rows = lake.dataset(ACCOUNTING).to_table(
        columns=[BATCH_ID], filter=pc.field("table") == table
    )
    return set(rows.column(BATCH_ID).to_pylist())


def _reference_values(
    lake: Lake, spec: SilverTable, result: SilverResult
) -> dict[str, pl.Series]:
    values = {}
    for column, target in spec.references.items():
        layer, table, target_column = target.split(".")
        name = f"{layer}.{table}"
        if not lake.exists(name):
            result.notes.append(
                f"reference {column} -> {target} not checked: {name} absent"
            )
            continue
        read = lake.read(name, columns=[target_column])
        values[column] = _frame(read).to_series()
    return values


def _write_new_batches(
    lake: Lake, table: str, rows: pl.DataFrame, inputs: dict[str, int | str]
) -> None:
    if rows.height == 0:
        return
    present = lake.distinct(table, BATCH_ID)
    fresh = rows.filter(~pl.col(BATCH_ID).is_in(list(present))) if present else rows
    if fresh.height:
        lake.write(table, fresh.to_arrow(), mode="append", inputs=inputs)


def _write_silver(
    lake: Lake,
    spec: SilverTable,
    files: list[DataFile],
    inputs: dict[str, int | str],
    *,
    updates: bool,
) -> None:
    """Record the new batches' files in one commit; with `updates` (some rows
    replace an earlier version of their key) merge each key's last version
    instead (the files are then read back and left unrecorded)."""
    table = silver_table(spec)
    if not updates or spec.latest_by is None:
        if files:
            schema = pq.read_schema(lake.path(table) / files[0].path)
            lake.commit_files(table, files, schema=schema, inputs=inputs)
        return
    rows = _frame(
        pa.concat_tables(pq.read_table(lake.path(table) / f.path) for f in files)
    )
    winners = rows.unique(spec.key, keep="last", maintain_order=True)
    lake.upsert(
        table, winners.to_arrow(), key=spec.key, newer=spec.latest_by, inputs=inputs
    )
    _discard(lake, table, files)


def _discard(lake: Lake, table: str, files: list[DataFile]) -> None:
    """Remove written files that no commit of `table` records."""
    recorded = set(lake.file_paths(table)) if lake.exists(table) else set()
    for written in files:
        if written.path not in recorded:
            (lake.path(table) / written.path).unlink(missing_ok=True)


REDACTED = "<pii>"


def reveal_pii(raw: pl.DataFrame, spec: SilverTable, codec: PiiCodec) -> pl.DataFrame:
    """Bronze rows with PII decrypted, key columns already pseudonymised (so a
    key is deduplicated and joined on its pseudonym, as silver stores it)."""
    changed = []
    for name, mode in spec.pii.items():
        if name not in raw.columns:
            continue
        clear = codec.decrypt(raw.get_column(name).to_list())
        values = codec.pseudonym(clear) if mode == "key" else clear
        changed.append(pl.Series(name, values, dtype=pl.String))
    return raw.with_columns(changed)


def protect_pii(
    good: pl.DataFrame, bad: pl.DataFrame, spec: SilverTable, codec: PiiCodec
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Encrypt the `encrypt` PII columns of silver and quarantine rows; a
    quarantine reason quoting one of its row's values gets it redacted."""
    hidden = [n for n, mode in spec.pii.items() if mode == "encrypt"]
    good = good.with_columns(
        pl.Series(n, codec.encrypt(good.get_column(n).to_list()), dtype=pl.String)
        for n in hidden
    )
    present = [n for n in hidden if n in bad.columns]
    if not bad.height or not present:
        return good, bad
    reasons = []
    for row in bad.select("_reason", *present).iter_rows():
        reason = row[0]
        for value in row[1:]:
            if value and reason:
                reason = reason.replace(value, REDACTED)
        reasons.append(reason)
    bad = bad.with_columns(
        pl.Series("_reason", reasons, dtype=pl.String),
        *(
            pl.Series(n, codec.encrypt(bad.get_column(n).to_list()), dtype=pl.String)
            for n in present
        ),
    )
    return good, bad


def build_silver(
    lake: Lake,
    spec: SilverTable,
    *,
    processed_at: datetime,
    codec: PiiCodec | None = None,
    engine: Engine | None = None,
) -> SilverResult:
    """Bring `silver.<name>` and `quarantine.<name>` up to date with bronze.

    A spec declaring PII needs `codec`: bronze's encrypted values are read in
    memory only, and silver and quarantine store them protected. On a cluster
    engine the row-wise checks (transform, types, contract) of a table without
    PII run on the workers, each over a contiguous part of the chunk; keys,
    references, accounting and writes stay here.
    """
    target, quarantine = silver_table(spec), quarantine_table(spec)
    if spec.pii and codec is None:
        msg = f"{target}: PII columns {', '.join(spec.pii)} need the PII key"
        raise ConfigError(msg)
    bronze = f"bronze.{spec.source}"
    result = SilverResult(table=target)
    bronze_version = lake.version(bronze)
    if bronze_version is None:
        result.notes.append(f"{bronze} does not exist yet: nothing to do")
        return result
    pending = sorted(lake.distinct(bronze, BATCH_ID) - _accounted(lake, target))
    if not pending:
        return result
    pinned = {bronze: bronze_version}
    con = lake.connect(pinned)  # streams row groups, filters early
    columns = ", ".join(  # names come from source files: quoted, never trusted
        quote(c) for c in lake.dataset(bronze).schema.names if c != SOURCE
    )
    latest = () if spec.latest_by is None else (spec.latest_by,)
    existing = _taken_keys(lake, spec, pending)
    references = _reference_values(lake, spec, result)
    held = lake.distinct(target, BATCH_ID)  # a run killed before its accounting
    files: list[DataFile] = []  # each chunk's silver rows, written, not committed
    bads, counts = [], []
    try:
        for chunk in _chunks(con, bronze, pending):
            # one chunk of batches in memory at a time: its silver rows go to a
            # file of the table's folder, recorded by one commit at the end
            good, bad, counted = _checked_chunk(
                con,
                spec,
                chunk,
                columns=columns,
                existing=existing,
                references=references,
                codec=codec,
                lake=lake,
                pinned=pinned,
                engine=engine,
                processed_at=processed_at,
            )
            counts.append(counted)
            if spec.key:  # later chunks see this chunk's keys as already taken
                taken = good.select(*spec.key, *latest)
                # appended as is (an update's key twice, the newer last): each
                # chunk looks up only its own keys (`_known_keys`), so the build
                # stays linear in rows rather than re-deduplicating all keys
                existing = (
                    taken
                    if existing is None
                    else pl.concat([existing, taken], rechunk=False)
                )
            result.silver_rows += good.height
            files.extend(_write_chunk(lake, target, good, held))
            del good
            bads.append(bad)
        bad = pl.concat(bads, how="diagonal_relaxed")
        inputs: dict[str, int | str] = {bronze: bronze_version}
        _write_new_batches(lake, quarantine, bad, inputs)
        accounted = pl.concat(counts)
        updates = spec.latest_by is not None and accounted["replaced_rows"].sum() > 0
        _write_silver(lake, spec, files, inputs, updates=updates)
    except BaseException:  # a failed check, a killed run: the files are garbage
        _discard(lake, target, files)
        raise
    lake.write(
        ACCOUNTING,
        accounted.to_arrow(),
        mode="append",
        inputs=inputs,
        merge_schema=True,  # replaced_rows came after the first tables
    )
    result.batches = len(pending)
    result.quarantined_rows = bad.height
    result.bronze_rows = result.silver_rows + bad.height
    if bad.height:
        checks = bad.get_column("_check").str.split("; ").explode().value_counts()
        result.by_check = dict(checks.iter_rows())
    return result


def _write_chunk(
    lake: Lake, table: str, good: pl.DataFrame, held: set[str]
) -> list[DataFile]:
    """A chunk's silver rows of batches the table does not hold yet, as an
    uncommitted file (none when there are no such rows)."""
    fresh = good.filter(~pl.col(BATCH_ID).is_in(list(held))) if held else good
    written = lake.write_file(table, fresh.to_arrow())
    del fresh
    # Arrow's allocator keeps the chunk's freed pages; the next chunk would
    # add to them rather than reuse them all
    pa.default_memory_pool().release_unused()
    return [] if written is None else [written]


def _taken_keys(
    lake: Lake, spec: SilverTable, pending: list[str]
) -> pl.DataFrame | None:
    """Keys (and versions) silver holds from batches other than `pending`."""
    target = silver_table(spec)
    if not spec.key or not lake.exists(target):
        return None
    latest = () if spec.latest_by is None else (spec.latest_by,)
    keys = lake.dataset(target).to_table(
        columns=[*spec.key, *latest], filter=~pc.field(BATCH_ID).isin(pending)
    )
    return _frame(keys)


def _checked_chunk(
    con: duckdb.DuckDBPyConnection,
    spec: SilverTable,
    chunk: list[str],
    *,
    columns: str,
    existing: pl.DataFrame | None,
    references: Mapping[str, pl.Series],
    codec: PiiCodec | None,
    lake: Lake,
    pinned: dict[str, int],
    engine: Engine | None,
    processed_at: datetime,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One chunk of whole bronze batches: (silver rows, quarantined rows, the
    batches' accounting); raises when a batch's rows do not add up."""
    ((bronze, bronze_version),) = pinned.items()
    # the range lets the scan skip row groups by their statistics (the list
    # alone is a join); the chunk's batches are consecutive in sorted order
    sql = (
        f"SELECT {columns} FROM {bronze} WHERE {BATCH_ID} BETWEEN $first AND $last "
        f"AND {BATCH_ID} IN (SELECT unnest($chunk))"
    )
    raw, checked = _read_chunk(
        con, spec, sql, chunk, codec=codec, lake=lake, pinned=pinned, engine=engine
    )
    good, bad = validate_rows(
        raw, spec, existing_keys=existing, references=references, checked=checked
    )
    if codec is not None and spec.pii:
        good, bad = protect_pii(good, bad, spec, codec)
    counted = _account(
        raw,
        good,
        bad=bad,
        replacing=_replacing(good, spec, existing),
        table=silver_table(spec),
        bronze_version=bronze_version,
        processed_at=processed_at,
    )
    return good, bad, counted


def _read_chunk(
    con: duckdb.DuckDBPyConnection,
    spec: SilverTable,
    sql: str,
    chunk: list[str],
    *,
    codec: PiiCodec | None,
    lake: Lake,
    pinned: dict[str, int],
    engine: Engine | None,
) -> tuple[pl.DataFrame, tuple[pl.DataFrame, list[pl.DataFrame]] | None]:
    """A chunk's bronze rows (PII revealed) and, on a cluster, their row-wise
    checks done by the workers (None: validate_rows does them here)."""
    params = {"chunk": chunk, "first": min(chunk), "last": max(chunk)}
    # sorted here: DuckDB's ORDER BY holds every string of the chunk again
    raw = _frame(con.sql(sql, params=params).to_arrow_table()).sort(ORDER)
    if codec is not None and spec.pii:
        return reveal_pii(raw, spec, codec), None
    if engine is None or not engine.distributed:
        return raw, None
    task = partial(
        _checked_part, lake=lake, spec=spec, sql=sql, chunk=chunk, pinned=pinned
    )
    return raw, _gathered(engine.map(task, _parts(raw.height, engine)))


def _parts(rows: int, engine: Engine) -> list[tuple[int, int]]:
    """(offset, count) of up to `engine.partitions` contiguous parts of `rows`."""
    bounds = np.linspace(0, rows, engine.partitions + 1).astype(int)
    return [(int(a), int(b - a)) for a, b in pairwise(bounds) if b > a]


def _checked_part(
    part: tuple[int, int],
    *,
    lake: Lake,
    spec: SilverTable,
    sql: str,
    chunk: list[str],
    pinned: dict[str, int],
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """One cluster task: rows [offset, offset + count) of a chunk, in the stage's
    order, read here from bronze and checked row by row (positions in the chunk)."""
    offset, count = part
    con = lake.connect(pinned)
    order = ", ".join(ORDER)
    query = f"{sql} ORDER BY {order} LIMIT {int(count)} OFFSET {int(offset)}"
    params = {"chunk": chunk, "first": min(chunk), "last": max(chunk)}
    raw = _frame(con.sql(query, params=params).to_arrow_table())
    typed, failures = checked_rows(raw, spec)
    return typed, [f.with_columns(pl.col(_POS) + offset) for f in failures]


def _gathered(
    found: list[tuple[pl.DataFrame, list[pl.DataFrame]]],
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The parts' typed rows (in order) and all their failures."""
    typed = pl.concat([t for t, _ in found], rechunk=True)  # one chunk, as here
    return typed, [f for _, failures in found for f in failures]


@dataclass
class RetryResult:
    """What `retry_quarantine` moved: rows released to silver, rows still held."""

    table: str
    released_rows: int = 0
    still_quarantined: int = 0
    by_batch: dict[str, int] = field(default_factory=dict)


_REASON_COLUMNS = ("_column", "_check", "_reason")


def retry_quarantine(
    lake: Lake, spec: SilverTable, *, processed_at: datetime
) -> RetryResult:
    """Re-validate rows quarantined only for a reference that was missing (a
    customer that arrived after its transactions) and move those that now pass to
    silver, keeping bronze = silver + quarantine per batch.

    Three commits, each safe to repeat: silver gets the released rows (a row a
    killed retry already appended, same key and batch, is not appended again),
    quarantine loses them, and the batches' accounting is recomputed from the
    quarantine table itself. Rows with any other failure stay where they are.
    """
    target, quarantine = silver_table(spec), quarantine_table(spec)
    result = RetryResult(table=target)
    if not spec.references or not lake.exists(quarantine):
        return result
    if not spec.key:
        msg = f"{target}: --retry needs a table with a key (this one declares none)"
        raise ContractError(msg)
    held = _frame(lake.read(quarantine))
    late = held.filter(pl.col("_check") == "foreign_key").drop(_REASON_COLUMNS)
    result.still_quarantined = held.height
    if late.height:
        silver_keys = (
            _frame(lake.read(target, columns=[*spec.key, BATCH_ID]))
            if lake.exists(target)
            else None
        )
        released = _release(lake, spec, late, silver_keys, processed_at=processed_at)
        if released.height:
            lake.merge_matched(
                quarantine,
                released.to_arrow(),
                key=(BATCH_ID, ROW),
                action="delete",
                inputs={target: lake.version(target) or 0},
            )
        result.released_rows = released.height
        result.still_quarantined -= released.height
        result.by_batch = dict(
            released.group_by(BATCH_ID).len().sort(BATCH_ID).iter_rows()
        )
    _recount(lake, target, quarantine, processed_at=processed_at)
    return result


def _release(
    lake: Lake,
    spec: SilverTable,
    late: pl.DataFrame,
    silver_keys: pl.DataFrame | None,
    *,
    processed_at: datetime,
) -> pl.DataFrame:
    """Append the late rows that now validate to silver; their (batch, row)."""
    key = list(spec.key)
    retry, again = late, late.clear().select(BATCH_ID, ROW)
    if silver_keys is not None and silver_keys.height:
        payload = late.drop([c for c in METADATA_COLUMNS if c in late.columns])
        typed, _ = _type_columns(spec.transform(payload), spec, late.height)
        keyed = typed.select(key).with_columns(
            late.get_column(BATCH_ID), late.get_column(ROW)
        )
        # keys are unique in silver: the same key from the same batch there means
        # a retry killed before its quarantine delete already appended this row;
        # the same key from another batch is another version: the row stays held
        again = keyed.join(silver_keys, on=[*key, BATCH_ID], how="semi")
        known = keyed.join(silver_keys.select(key), on=key, how="semi")
        retry = late.join(known.select(BATCH_ID, ROW), on=[BATCH_ID, ROW], how="anti")
        again = again.select(BATCH_ID, ROW)
    references = _reference_values(lake, spec, SilverResult(table=silver_table(spec)))
    good, bad = validate_rows(retry, spec, references=references)
    if good.height:
        lake.write(
            silver_table(spec),
            good.to_arrow(),
            mode="append",
            inputs={quarantine_table(spec): lake.version(quarantine_table(spec)) or 0},
        )
    passed = retry.select(BATCH_ID, ROW).join(
        bad.select(BATCH_ID, ROW), on=[BATCH_ID, ROW], how="anti"
    )
    return pl.concat([again, passed])


def _recount(
    lake: Lake, target: str, quarantine: str, *, processed_at: datetime
) -> None:
    """Set each batch's quarantined_rows to what quarantine holds and silver_rows
    to bronze_rows minus that (the invariant), where they differ."""
    if not lake.exists(ACCOUNTING):
        return
    accounting = _frame(lake.read(ACCOUNTING)).filter(pl.col("table") == target)
    held = (
        _frame(lake.read(quarantine, columns=[BATCH_ID]))
        .group_by(BATCH_ID)
        .agg(pl.len().cast(pl.Int64).alias("_held"))
    )
    fixed = (
        accounting.join(held, on=BATCH_ID, how="left")
        .with_columns(pl.col("_held").fill_null(0))
        .filter(pl.col("_held") != pl.col("quarantined_rows"))
        .with_columns(
            pl.col("_held").alias("quarantined_rows"),
            (pl.col("bronze_rows") - pl.col("_held")).alias("silver_rows"),
            pl.lit(processed_at).cast(pl.Datetime("us", "UTC")).alias("processed_at"),
        )
        .drop("_held")
    )
    if fixed.height:
        lake.merge_matched(
            ACCOUNTING,
            fixed.to_arrow(),
            key=("table", BATCH_ID),
            action="update",
            inputs={quarantine: lake.version(quarantine) or 0},
        )


def _replacing(
    good: pl.DataFrame, spec: SilverTable, existing: pl.DataFrame | None
) -> pl.DataFrame:
    """Latest-wins mode: the accepted rows that replace their key's earlier
    version (in silver, or accepted before them in the build)."""
    if spec.latest_by is None or not good.height:
        return good.clear().select(BATCH_ID)
    key = list(spec.key)
    marked = good.select(BATCH_ID, *key).with_columns(
        pl.struct(key).is_first_distinct().not_().alias("_seen")
    )
    known = _known_keys(existing, marked, key)
    if known is not None:
        hit = known.select(key).unique().with_columns(pl.lit(True).alias("_hit"))
        marked = marked.join(hit, on=key, how="left", maintain_order="left")
        marked = marked.with_columns(pl.col("_seen") | pl.col("_hit").fill_null(False))
    return marked.filter("_seen").select(BATCH_ID)


def _known_keys(
    existing: pl.DataFrame | None, rows: pl.DataFrame, key: list[str]
) -> pl.DataFrame | None:
    """The rows of `existing` (keys taken so far, in order: an updated key's
    newer version last) whose key is among `rows`' keys, one per key (the
    last); None when there are none. A semi join over the chunk's keys, so
    the cost per chunk is linear, not a deduplication of every key so far."""
    if existing is None or not existing.height:
        return None
    mine = existing.join(rows.select(key), on=key, how="semi", maintain_order="left")
    if not mine.height:
        return None
    return mine.unique(key, keep="last", maintain_order=True)


def _account(
    raw: pl.DataFrame,
    good: pl.DataFrame,
    *,
    bad: pl.DataFrame,
    replacing: pl.DataFrame,
    table: str,
    bronze_version: int,
    processed_at: datetime,
) -> pl.DataFrame:
    """Per-batch row counts; raises when bronze != silver + quarantine for a batch."""

    def per_batch(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by(BATCH_ID).agg(pl.len().cast(pl.Int64).alias(name))

    counts = (
        per_batch(raw, "bronze_rows")
        .join(per_batch(good, "silver_rows"), on=BATCH_ID, how="left")
        .join(per_batch(bad, "quarantined_rows"), on=BATCH_ID, how="left")
        .join(per_batch(replacing, "replaced_rows"), on=BATCH_ID, how="left")
        .fill_null(0)
        .sort(BATCH_ID)
    )
    broken = counts.filter(
        pl.col("bronze_rows") != pl.col("silver_rows") + pl.col("quarantined_rows")
    )
    if broken.height:
        first = broken.row(0, named=True)
        msg = (
            f"{table}: batch {first[BATCH_ID]} has {first['bronze_rows']} bronze rows "
            "but "
            f"{first['silver_rows']} silver + {first['quarantined_rows']} quarantined; "
            "nothing was written"
        )
        raise ContractError(msg)
    return counts.select(
        pl.lit(table).alias("table"),
        BATCH_ID,
        "bronze_rows",
        "silver_rows",
        "quarantined_rows",
        "replaced_rows",
        pl.lit(bronze_version, pl.Int64).alias("bronze_version"),
        pl.lit(processed_at).cast(pl.Datetime("us", "UTC")).alias("processed_at"),
    )
