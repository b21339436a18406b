"""Gold feature tables and point-in-time joins.

An aggregation view's gold table holds one row per event (its id, entity,
`event_time`, features, `_written_at`), computed once when the event first lands
in silver: an increment computes only the new events' rows (reading the rows
inside the longest window before them), and a label row joins its own event's
row by id.

A SQL view's gold table is the append-only history of the view: each row carries the
entity, `event_time` (when the value holds) and `_written_at` (when it became
known). A build appends only rows that are new or changed since the latest
version of their (entity, event_time), so backfills are visible as later writes.

The point-in-time join gives each label row, for each view, the latest value with
event_time <= the row's timestamp among rows written by `as_of`. Ties on
(entity, event_time) go to the latest `_written_at`. A value older than the
view's ttl is dropped: the row is kept with NULL features and `_missing_<view>`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from aistack.contract import AggregationView, FeatureView, UseCase, View
from aistack.engine import Engine, partition_of, split_rows
from aistack.errors import SchemaError
from aistack.features.offline import view_rows
from aistack.lake.delta import DataFile, Lake
from aistack.sql import quote

EVENT_TIME = "event_time"
WRITTEN_AT = "_written_at"
SPINE_ROW = "_spine_row"
_BATCH_ROWS = 256 * 1024


@dataclass(frozen=True)
class GoldResult:
    """What one gold build did."""

    table: str
    version: int | None
    new_rows: int
    skipped: bool


_q = quote


def _latest(gold: str, view: FeatureView, as_of: str, *, single_write: bool) -> str:
    """SQL of the view's rows known by `as_of`, one per (entity, event_time).

    A table holding a single write has one row per key already (a build
    collapses its own ties), so the de-duplication is skipped.
    """
    columns = ", ".join(_q(c) for c in (view.entity, EVENT_TIME, *view.feature_names))
    sql = f"SELECT {columns} FROM {gold} WHERE {WRITTEN_AT} <= {as_of}"
    if single_write:
        return sql
    return (
        f"{sql} QUALIFY row_number() OVER (PARTITION BY {_q(view.entity)}, "
        f"{EVENT_TIME} ORDER BY {WRITTEN_AT} DESC) = 1"
    )


def _single_write(lake: Lake, table: str, version: int | None = None) -> bool:
    found = lake.column_range(table, WRITTEN_AT, version=version)
    return found is not None and found[0] == found[1]


def build_gold(
    lake: Lake,
    use_case: UseCase,
    view: View,
    *,
    written_at: datetime,
    engine: Engine | None = None,
) -> GoldResult:
    """Append the view's new rows to its gold table.

    Skips (no new version) when the inputs' versions equal the last build's. On a
    cluster engine an aggregation view runs one task per entity-hash partition:
    the same SQL over the partition's events, exact because windows never cross
    entities; workers write files, one commit records them.
    """
    table = use_case.gold_table(view)
    inputs = lake.versions(view.inputs)
    if lake.last_inputs(table) == inputs:
        return GoldResult(table, lake.version(table), 0, skipped=True)
    versions = {**inputs, **lake.versions([table])}
    if engine is not None and engine.distributed and isinstance(view, AggregationView):
        task = partial(
            _gold_partition,
            lake=lake,
            view=view,
            table=table,
            versions=versions,
            written_at=written_at,
            parts=engine.partitions,
        )
        written = engine.map(task, range(engine.partitions))
        files = [f for f, _ in written if f is not None]
        version = lake.commit_files(table, files, schema=written[0][1], inputs=inputs)
        return GoldResult(table, version, sum(f.rows for f in files), skipped=False)
    con = lake.connect(versions)
    stream = _new_rows(lake, con, table, view, written_at)
    schema = _utc(stream.schema)
    counted = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in stream:  # streamed to the writer
            counted[0] += batch.num_rows
            yield batch.cast(schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    # An empty append still records the new inputs, so the next run can skip.
    version = lake.write(table, reader, mode="append", inputs=inputs)
    return GoldResult(table, version, counted[0], skipped=False)


def _new_rows(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    table: str,
    view: View,
    written_at: datetime,
) -> pa.RecordBatchReader:
    """The rows this build appends, in (entity, event_time[, id]) order."""
    if isinstance(view, AggregationView):
        rows = _new_event_rows(lake, con, table, view)
        at = pa.scalar(written_at, pa.timestamp("us", tz="UTC"))
        schema = rows.schema.append(pa.field(WRITTEN_AT, at.type))
        stamped = (
            pa.RecordBatch.from_arrays(
                [*batch.columns, pa.repeat(at, batch.num_rows)], schema=schema
            )
            for batch in rows
        )
        return pa.RecordBatchReader.from_batches(schema, stamped)
    rows_sql = _changed_rows(lake, con, table, view)
    return con.sql(
        f"SELECT *, $written_at::TIMESTAMPTZ AS {WRITTEN_AT} FROM ({rows_sql}) "
        f"ORDER BY {_q(view.entity)}, {EVENT_TIME}",
        params={"written_at": written_at},
    ).to_arrow_reader(batch_size=_BATCH_ROWS)


def _gold_partition(
    part: int,
    *,
    lake: Lake,
    view: AggregationView,
    table: str,
    versions: Mapping[str, int],
    written_at: datetime,
    parts: int,
) -> tuple[DataFile | None, pa.Schema]:
    """One cluster task: the new gold rows of one entity-hash partition, as a file.

    The source and the gold table are narrowed to the partition's entities, so
    each event's window (and the increment's look-back) is the embedded one.
    """
    only = partition_of(view.entity, part, parts)
    where = {view.source: only, table: only}
    con = lake.connect(versions, where=where)
    rows = _new_rows(lake, con, table, view, written_at).read_all()
    rows = rows.cast(_utc(rows.schema))
    return lake.write_file(table, rows), rows.schema


def aggregation_rows(
    con: duckdb.DuckDBPyConnection, view: AggregationView, *, since: str | None = None
) -> pa.RecordBatchReader:
    """The view's per-event rows over its source (`since`: a condition on it),
    streamed in (entity, event_time, id) order."""
    return view_rows(
        con,
        view.source,
        entity=view.entity,
        event_id=view.id,
        timestamp=view.timestamp,
        aggregations=view.aggregations,
        since=since,
    )


def _new_event_rows(
    lake: Lake, con: duckdb.DuckDBPyConnection, table: str, view: AggregationView
) -> pa.RecordBatchReader:
    """The rows of events not in gold yet (all events on a first build)."""
    ident, ts = _q(view.id), _q(view.timestamp)
    if not lake.exists(table):
        return aggregation_rows(con, view)
    con.execute(
        f"CREATE TEMP TABLE new_ids AS SELECT {ident}, {ts} FROM {view.source} "
        f"ANTI JOIN {table} USING ({ident})"
    )
    first = con.execute(f"SELECT epoch_us(min({ts})) FROM new_ids").fetchall()[0]
    if first is None or first[0] is None:
        return aggregation_rows(con, view, since="FALSE")
    since = f"epoch_us({ts}) > {int(first[0]) - view.span // timedelta(microseconds=1)}"
    rows = aggregation_rows(con, view, since=since)
    new = con.sql(f"SELECT {ident} FROM new_ids").to_arrow_table().column(0)
    kept = (b.filter(pc.is_in(b.column(view.id), value_set=new)) for b in rows)
    return pa.RecordBatchReader.from_batches(rows.schema, kept)


def _changed_rows(
    lake: Lake, con: duckdb.DuckDBPyConnection, table: str, view: FeatureView
) -> str:
    """SQL of a SQL view's rows that are new or changed since the last build."""
    expected = [view.entity, EVENT_TIME, *view.feature_names]
    missing = [c for c in expected if c not in con.sql(view.query).columns]
    if missing:
        msg = f"feature view {view.name}: query does not return {', '.join(missing)}"
        raise SchemaError(msg)
    cols = ", ".join(_q(c) for c in expected)
    order = ", ".join(f"{_q(f)} DESC NULLS LAST" for f in view.feature_names)
    fresh = (
        f"SELECT {cols} FROM ({view.query}) "
        f"QUALIFY row_number() OVER (PARTITION BY {_q(view.entity)}, {EVENT_TIME} "
        f"ORDER BY {order}) = 1"
    )
    if lake.exists(table):
        same = " AND ".join(
            f"f.{_q(c)} IS NOT DISTINCT FROM g.{_q(c)}" for c in expected
        )
        latest = _latest(
            table,
            view,
            "'infinity'::TIMESTAMPTZ",
            single_write=_single_write(lake, table),
        )
        return f"SELECT f.* FROM ({fresh}) f ANTI JOIN ({latest}) g ON {same}"
    return fresh


def _utc(schema: pa.Schema) -> pa.Schema:
    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC"))
        if f.name == WRITTEN_AT
        else pa.field(f.name, pa.timestamp("us"))
        if f.name == EVENT_TIME
        else f
        for f in schema
    ]
    return pa.schema(fields)


def point_in_time_join(
    lake: Lake,
    use_case: UseCase,
    spine: pa.Table,
    *,
    as_of: datetime,
    versions: Mapping[str, int] | None = None,
    engine: Engine | None = None,
) -> pa.Table:
    """Spine rows (entity keys + timestamp) with every view's features as of each row.

    Row order and count are the spine's. `versions` pins gold tables (lineage).
    On a cluster engine each view is joined by partition of its join key (the
    event id of an aggregation view, the entity of a SQL view), so every spine
    row meets exactly the gold rows the embedded join gives it.
    """
    gold = {use_case.gold_table(v): v for v in use_case.views}
    if not gold:  # rows carry their own features: nothing to join
        return spine
    pinned = dict(versions) if versions is not None else lake.versions(gold)
    timestamp = use_case.labels.timestamp
    assert timestamp is not None  # views need a clock (UseCase checks)
    if engine is not None and engine.distributed:
        return _cluster_join(
            spine, lake, use_case, as_of=as_of, pinned=pinned, engine=engine
        )
    return _join(
        spine,
        lake=lake,
        gold=gold,
        timestamp=timestamp,
        as_of=as_of,
        pinned=pinned,
    )


_ENGINE_ROW = "_engine_row"


def _cluster_join(
    spine: pa.Table,
    lake: Lake,
    use_case: UseCase,
    *,
    as_of: datetime,
    pinned: Mapping[str, int],
    engine: Engine,
) -> pa.Table:
    """The point-in-time join as one cluster task per (view, key partition)."""
    numbered = spine.append_column(_ENGINE_ROW, pa.array(range(spine.num_rows)))
    joined = spine
    ts = use_case.labels.timestamp
    assert ts is not None  # views need a clock (UseCase checks)
    for view in use_case.views:
        key = view.id if isinstance(view, AggregationView) else view.entity
        one = {use_case.gold_table(view): view}
        parts = split_rows(numbered, key, engine.partitions)
        task = partial(
            _join, lake=lake, gold=one, timestamp=ts, as_of=as_of, pinned=pinned
        )
        found = pa.concat_tables(engine.map(task, parts)).sort_by(_ENGINE_ROW)
        added = [c for c in found.column_names if c not in numbered.column_names]
        for name in added:
            joined = joined.append_column(name, found.column(name))
    return joined


def _join(
    spine: pa.Table,
    *,
    lake: Lake,
    gold: Mapping[str, View],
    timestamp: str,
    as_of: datetime,
    pinned: Mapping[str, int],
) -> pa.Table:
    """The point-in-time join of `spine` (its `timestamp` column) to `gold`.

    Also one cluster task: a spine partition joined to one view's features.
    """
    con = lake.connect(pinned)
    con.register("spine_in", spine)
    con.execute(
        f"CREATE TEMP VIEW spine AS SELECT *, row_number() OVER () AS {SPINE_ROW} "
        "FROM spine_in"
    )
    ts = _q(timestamp)
    ctes, joins, selects = [], [], ["s.*"]
    for i, (table, view) in enumerate(gold.items()):
        alias = f"v{i}"
        if isinstance(view, AggregationView):
            ident = _q(view.id)
            names = ", ".join(_q(f) for f in view.feature_names)
            ctes.append(
                f"{alias} AS (SELECT {ident}, {names} FROM {table} "
                f"WHERE {WRITTEN_AT} <= $as_of::TIMESTAMPTZ)"
            )
            joins.append(f"LEFT JOIN {alias} ON s.{ident} = {alias}.{ident}")
            selects.extend(f"{alias}.{_q(f)}" for f in view.feature_names)
            selects.append(f"{alias}.{ident} IS NULL AS {_q('_missing_' + view.name)}")
            continue
        latest = _latest(
            table,
            view,
            "$as_of::TIMESTAMPTZ",
            single_write=_single_write(lake, table, pinned.get(table)),
        )
        ctes.append(f"{alias} AS ({latest})")
        key = _q(view.entity)
        joins.append(
            f"ASOF LEFT JOIN {alias} ON s.{key} = {alias}.{key} "
            f"AND s.{ts} >= {alias}.{EVENT_TIME}"
        )
        ttl = f"INTERVAL {int(view.ttl.total_seconds())} SECOND"
        stale = (
            f"({alias}.{EVENT_TIME} IS NULL OR s.{ts} - {alias}.{EVENT_TIME} > {ttl})"
        )
        for feature in view.feature_names:
            value = f"{alias}.{_q(feature)}"
            selects.append(
                f"CASE WHEN {stale} THEN NULL ELSE {value} END AS {_q(feature)}"
            )
        selects.append(f"{stale} AS {_q('_missing_' + view.name)}")
    sql = (
        f"WITH {', '.join(ctes)} SELECT {', '.join(selects)} FROM spine s "
        f"{' '.join(joins)} ORDER BY s.{SPINE_ROW}"
    )
    result = con.sql(sql, params={"as_of": as_of}).to_arrow_table()
    return result.drop_columns([SPINE_ROW])
