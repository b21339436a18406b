"""Per-event window features offline: one sorted pass over a view's events.

The definition is the one of `aistack.features.aggregations`: each event's
window holds its entity's events in (t - shift - window, t - shift], ordered by
(timestamp, event id), the event itself included when there is no shift.
DuckDB reads, filters and sorts the events by (entity, timestamp, id) once;
each window bound is then one binary search on (entity, time), shared by every
feature of that bound. count, sum, mean and last come from prefix arrays (sums
per entity in extended precision, so an entity's values never depend on the
other entities read with it: a cluster partition gives the embedded values);
min, max and stddev from DuckDB frames over the rows found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aistack.contract.aggregations import Aggregation, Spec, Where, specs
from aistack.features.aggregations import KEY_LIMIT, Prefixes, aggregate, prefixes
from aistack.sql import quote

_PREFIXED = ("count", "sum", "mean", "last")
_US = "_us"
_CHUNK_ROWS = 256 * 1024

Series = tuple[str | None, Where | None]


def view_rows(
    con: duckdb.DuckDBPyConnection,
    source: str,
    *,
    entity: str,
    event_id: str,
    timestamp: str,
    aggregations: Sequence[Aggregation],
    since: str | None = None,
    chunk_rows: int = _CHUNK_ROWS,
) -> pa.RecordBatchReader:
    """One row per event of `source`: id, entity, event_time, features.

    Rows are in (entity, event_time, id) order, streamed in batches of whole
    entities of about `chunk_rows` rows (the arrays of one batch bound the
    memory; the values do not depend on the cut). `since` (a SQL condition on
    the source) limits the rows read (increments: the new events and everything
    inside the longest window before them).
    """
    compiled = specs(aggregations)
    series = _series_of(compiled)
    values = [f"{_value_sql(s)} AS _s{i}" for i, s in enumerate(series)]
    where = f" WHERE {since}" if since else ""
    ident, key, ts = quote(event_id), quote(entity), quote(timestamp)
    events = con.sql(
        f"SELECT {ident}, {key}, {ts} AS event_time, epoch_us({ts}) AS {_US}"
        + "".join(f", {v}" for v in values)
        + f" FROM {source}{where} ORDER BY {key}, {ts}, {ident}"
    ).to_arrow_table()
    kept = events.schema.names[:3]
    schema = pa.schema(
        [*(events.schema.field(c) for c in kept)]
        + [pa.field(s.name, pa.float64()) for s in compiled]
    )

    def batches() -> Iterator[pa.RecordBatch]:
        starts = _segment_starts(events.column(entity))
        at, n = 0, events.num_rows
        while at < n:
            after = int(np.searchsorted(starts, at + chunk_rows))
            end = int(starts[after]) if after < len(starts) else n
            chunk = events.slice(at, end - at)
            features = window_features(chunk, compiled, entity=entity)
            columns = [*(chunk.column(c) for c in kept), *features]
            yield from pa.table(columns, schema=schema).to_batches()
            at = end

    return pa.RecordBatchReader.from_batches(schema, batches())


def _series_of(compiled: Sequence[Spec]) -> list[Series]:
    """The distinct (column, filter) pairs the features aggregate."""
    return list(dict.fromkeys((s.column, s.where) for s in compiled))


def _value_sql(series: Series) -> str:
    """The value a row gives the series: NULL when the row is left out."""
    column, where = series
    value = f"CAST({quote(column)} AS DOUBLE)" if column is not None else "1.0::DOUBLE"
    conditions = [where.sql()] if where is not None else []
    if column is not None:
        conditions.append(f"{quote(column)} IS NOT NULL")
    if not conditions:
        return value
    return f"CASE WHEN {' AND '.join(conditions)} THEN {value} END"


def window_features(
    events: pa.Table, compiled: Sequence[Spec], *, entity: str
) -> list[pa.Array]:
    """Every feature (float64, NULL when empty and unfilled) of every event.

    `events` is `view_rows`' sorted frame: the entity, `_us` (epoch
    microseconds) and one `_s<i>` value column per (column, filter) series.
    """
    n = events.num_rows
    if n == 0:
        return [pa.array([], pa.float64()) for _ in compiled]
    layout = _Layout.of(_segment_starts(events.column(entity)), n)
    search = _bounds(events.column(_US).to_numpy(), layout.seg, compiled)
    bounds: dict[int, np.ndarray] = {0: np.arange(1, n + 1)}  # up to the event itself

    def upto(us: int) -> np.ndarray:
        if us not in bounds:
            bounds[us] = search(us)
        return bounds[us]

    series = _series_of(compiled)
    prefixed: dict[Series, Prefixes] = {}
    framed: list[tuple[Spec, np.ndarray, np.ndarray, pa.ChunkedArray]] = []
    out: list[np.ndarray | None] = []
    for spec in compiled:
        end = upto(spec.shift_us)
        start = upto(spec.shift_us + spec.window_us)
        key = (spec.column, spec.where)
        column = events.column(f"_s{series.index(key)}")
        if key == (None, None) and spec.function == "count":  # every row counts
            out.append((end - start).astype(np.float64))
        elif spec.function in _PREFIXED:
            if key not in prefixed:
                prefixed[key] = layout.series(column)
            # the prefix arrays hold one extra slot per entity: row i is at i + seg
            at = (start + layout.seg, end + layout.seg)
            out.append(aggregate(spec.function, prefixed[key], *at, layout.no_own))
        else:
            framed.append((spec, start, end, column))
            out.append(None)
    found = iter(_framed(framed, layout.seg) if framed else [])
    done = [next(found) if o is None else o for o in out]
    return [_filled(o, s.fill) for o, s in zip(done, compiled, strict=True)]


@dataclass(frozen=True)
class _Layout:
    """Where rows sit in the per-entity prefix arrays: entity s holds slots
    first[s] + s ... first[s] + s + its row count (one slot more than rows).

    Per-entity sums run in 2-D grids, one per power-of-two row count: each grid
    row one entity, summed along the row.
    """

    seg: np.ndarray  # each row's entity index
    slot: np.ndarray  # each row's slot: row + seg
    no_own: np.ndarray  # False per row (windows already hold the event itself)
    grids: list[tuple[tuple[int, int], np.ndarray, np.ndarray]]  # shape, cell, row

    @classmethod
    def of(cls, first: np.ndarray, n: int) -> _Layout:
        lengths = np.diff(np.append(first, n))
        seg = np.repeat(np.arange(len(first)), lengths)
        col = np.arange(n) - first[seg]
        width = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
        row_width = width[seg]
        grids = []
        for w in np.unique(width):
            rows = np.flatnonzero(row_width == w)
            grid_row = np.cumsum(np.diff(seg[rows], prepend=seg[rows[0]]) != 0)
            shape = (int(grid_row[-1]) + 1, (1 << int(w)) + 1)
            grids.append((shape, grid_row * shape[1] + col[rows] + 1, rows))
        no_own = np.zeros(n, dtype=bool)
        return cls(seg, np.arange(n) + seg, no_own, grids)

    def series(self, column: pa.ChunkedArray) -> Prefixes:
        """The prefix arrays of one series; its sums restart at each entity."""
        valid = ~column.is_null().to_numpy(zero_copy_only=False)
        values = column.fill_null(0.0).to_numpy()
        slots = len(self.slot) + int(self.seg[-1]) + 1
        valid_p = np.zeros(slots, dtype=bool)
        valid_p[self.slot] = valid
        values_p = np.zeros(slots)
        values_p[self.slot] = values
        total = np.zeros(slots + 1, dtype=np.longdouble)
        for shape, cell, rows in self.grids:
            grid = np.zeros(shape[0] * shape[1], np.longdouble)
            grid[cell] = values[rows]
            np.cumsum(grid.reshape(shape), axis=1, out=grid.reshape(shape))
            total[self.slot[rows] + 1] = grid[cell]
        return prefixes(valid_p, values_p, self.no_own, values, total=total)


def _segment_starts(column: pa.ChunkedArray) -> np.ndarray:
    """The index of each entity's first row (NULL is one entity, sorted last)."""
    n = len(column)
    if n < 2:  # noqa: PLR2004  (no pair to compare)
        return np.zeros(min(n, 1), dtype=np.int64)
    before, after = column.slice(0, n - 1), column.slice(1)
    same = pc.fill_null(pc.equal(before, after), False)
    same = pc.or_(same, pc.and_(pc.is_null(before), pc.is_null(after)))
    changed = np.flatnonzero(~same.to_numpy(zero_copy_only=False)) + 1
    return np.concatenate([[0], changed]).astype(np.int64)


def _bounds(
    us: np.ndarray, seg: np.ndarray, compiled: Sequence[Spec]
) -> Callable[[int], np.ndarray]:
    """`upto(d)`: per event, the index after its entity's rows with time <= t - d.

    One binary search on sorted int64 keys of (entity, time); when entity count
    times the time span overflows them, times are replaced by their ranks among
    the distinct times (the same order, so the same rows).
    """
    reach = max(s.shift_us + s.window_us for s in compiled)
    base = int(us.min()) - reach - 1
    span = int(us.max()) - base + 1
    if (int(seg[-1]) + 1) * (span + 1) < KEY_LIMIT:
        keyed = seg * (span + 1) + (us - base)
        return lambda d: np.searchsorted(keyed, keyed - d, "right")
    distinct = np.unique(us)
    origin = seg * (len(distinct) + 1)
    ranked = origin + np.searchsorted(distinct, us, "right")
    return lambda d: np.searchsorted(
        ranked, origin + np.searchsorted(distinct, us - d, "right"), "right"
    )


def _framed(
    framed: Sequence[tuple[Spec, np.ndarray, np.ndarray, pa.ChunkedArray]],
    seg: np.ndarray,
) -> list[np.ndarray]:
    """min, max and stddev over each event's rows [start, end), by DuckDB (one
    partition per entity: its values do not depend on the other entities)."""
    func = {"min": "min", "max": "max", "stddev": "stddev_samp"}
    columns: dict[str, pa.ChunkedArray | np.ndarray] = {
        "_i": np.arange(len(seg)),
        "_seg": seg,
    }
    selects = []
    for k, (spec, start, end, values) in enumerate(framed):
        columns |= {f"_v{k}": values, f"_lo{k}": start, f"_hi{k}": end}
        frame = (
            f"PARTITION BY _seg ORDER BY _i ROWS BETWEEN _i - _lo{k} PRECEDING "
            f"AND _i - _hi{k} + 1 PRECEDING"
        )
        selects.append(f"{func[spec.function]}(_v{k}) OVER ({frame}) AS _f{k}")
    con = duckdb.connect()
    con.register("framed_in", pa.table(columns))
    found = con.sql(
        f"SELECT {', '.join(selects)} FROM framed_in ORDER BY _i"
    ).to_arrow_table()
    return [
        found.column(k).to_numpy(zero_copy_only=False).astype(np.float64)
        for k in range(len(framed))
    ]


def _filled(column: np.ndarray, fill: float | None) -> pa.Array:
    """The feature as Arrow: NaN is NULL, or `fill` when the feature has one."""
    if fill is not None:
        return pa.array(np.where(np.isnan(column), fill, column))
    return pa.array(column, mask=np.isnan(column))
