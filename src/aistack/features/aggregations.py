"""Windowed aggregations: one declaration, compiled to DuckDB SQL and to online code.

A feature of an `AggregationView` is `function(column)` over the entity's events
in a half-open window: (t - window, t] with the event itself included, or, with a
`shift`, (t - shift - window, t - shift] (rows whose label was known by t).
Events are ordered by (timestamp, event id): of two events of one entity in the
same microsecond, the first does not see the second, exactly as a stream would
score them. The offline path (`aistack.features.offline.view_rows`) and the
online evaluator (`evaluate`) implement this one definition; tests hold them
equal.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal, NamedTuple

import numpy as np

from aistack.contract.aggregations import (
    Function,
    Spec,
    Value,
    Where,
)

# --- online: the same definition over an entity's events ---------------------


class Event(NamedTuple):
    """One event of an entity as the online state keeps it.

    `values` follow the view's value columns. Ties on the timestamp are broken
    by the id; `anonymous` events (a request without an id, kept under its
    request id) sort after every declared id. A named tuple: the state builds
    one per stored event on every read, ~4x faster than a frozen dataclass.
    """

    ts_us: int
    id: Value
    values: tuple[Value, ...]
    anonymous: bool = False

    @property
    def key(self) -> tuple[int, bool, Value]:
        """Sort key: (timestamp, anonymous last, id)."""
        return (self.ts_us, self.anonymous, self.id)


event_key = itemgetter(0, 3, 1)  # Event.key, without a Python call per event
_TS, _VALUES = itemgetter(0), itemgetter(2)


KEY_LIMIT = 2**62  # composite (entity, time) keys stay inside int64


@dataclass
class Prefixes:
    """One (column, filter) over the flattened events: what a window aggregates
    (online, and offline in `aistack.features.offline`)."""

    valid: np.ndarray  # bool per event: passes the filter, value not NULL
    values: np.ndarray  # float64 per event (0 where not valid), then one 0
    count: np.ndarray  # prefix counts of valid events (len + 1)
    total: np.ndarray  # prefix sums of values, extended precision (len + 1)
    last: np.ndarray  # prefix: index of the last valid event before i, or -1
    current_valid: np.ndarray  # per request: the request's own event
    current: np.ndarray


def _series(
    events: Sequence[Event],
    currents: Sequence[Event],
    ci: int,
    where: Where | None,
    wi: int,
) -> Prefixes:
    def column(items: Sequence[Event]) -> tuple[np.ndarray, np.ndarray]:
        n = len(items)
        if ci < 0:
            values = np.ones(n)
            valid = np.ones(n, dtype=bool)
        else:
            raw = list(map(itemgetter(ci), map(_VALUES, items)))
            valid = np.fromiter((v is not None for v in raw), bool, n)
            values = np.array(raw, dtype=np.float64)  # None -> NaN, zeroed below
        if where is not None:
            valid &= np.fromiter((where.test(e.values[wi]) for e in items), bool, n)
        return valid, np.where(valid, values, 0.0)

    valid, values = column(events)
    current_valid, current = column(currents)
    return prefixes(valid, values, current_valid, current)


def prefixes(
    valid: np.ndarray,
    values: np.ndarray,
    current_valid: np.ndarray,
    current: np.ndarray,
    *,
    total: np.ndarray | None = None,
) -> Prefixes:
    """The prefix arrays of one (column, filter) over flattened events (`total`:
    the prefix sums when the caller computed them)."""
    count = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(valid, out=count[1:])
    if total is None:
        total = np.zeros(len(values) + 1, dtype=np.longdouble)
        np.cumsum(values, dtype=np.longdouble, out=total[1:])
    last = np.full(len(values) + 1, -1, dtype=np.int64)
    last[1:] = np.where(valid, np.arange(len(values)), -1)
    np.maximum.accumulate(last, out=last)
    padded = np.append(values, 0.0)
    return Prefixes(valid, padded, count, total, last, current_valid, current)


def aggregate(
    function: Function,
    series: Prefixes,
    start: np.ndarray,
    end: np.ndarray,
    own: np.ndarray,
) -> np.ndarray:
    """One feature over the windows [start, end) (+ the request's own event)."""
    count: np.ndarray = series.count[end] - series.count[start] + own
    if function == "count":
        return count.astype(np.float64)
    if function in ("sum", "mean"):
        total = series.total[end] - series.total[start]
        total += np.where(own, series.current, 0.0)
        if function == "mean":
            total /= np.maximum(count, 1)
        return np.where(count > 0, total.astype(np.float64), np.nan)
    if function == "last":
        before = series.last[end]  # the last valid event before `end`, or -1
        found = before >= start
        held = np.where(found, series.values[np.maximum(before, 0)], np.nan)
        return np.where(own, series.current, held)
    return _loop(function, series, start, end, own)


def _loop(
    function: Function,
    series: Prefixes,
    start: np.ndarray,
    end: np.ndarray,
    own: np.ndarray,
) -> np.ndarray:
    """min, max, stddev: one request at a time over its window's values."""
    out = np.full(len(start), np.nan)
    for k in range(len(start)):
        lo, hi = int(start[k]), int(end[k])
        values = series.values[lo:hi][series.valid[lo:hi]].tolist()
        if own[k]:
            values.append(float(series.current[k]))
        n = len(values)
        if function == "min" and n:
            out[k] = min(values)
        elif function == "max" and n:
            out[k] = max(values)
        elif function == "stddev" and n >= 2:  # noqa: PLR2004  (sample)
            mean = math.fsum(values) / n
            out[k] = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return out


def evaluate_many(
    compiled: Sequence[Spec],
    columns: Mapping[str, int],
    segments: Sequence[Sequence[Event]],
    requests: Sequence[tuple[int, Event]],
) -> np.ndarray:
    """Every feature (NaN: NULL) of each request (segment index, event), vectorised.

    Each segment holds one entity's events sorted by key; a request sees the
    events of its segment strictly before it in (timestamp, id) order, plus
    itself. Windows are index ranges found by binary search on (segment, time);
    count, sum, mean and last come from prefix arrays (sums in extended
    precision), min, max and stddev from the window's values.
    """
    n = len(requests)
    out = np.full((n, len(compiled)), np.nan)
    if n == 0:
        return out
    sizes = np.fromiter((len(s) for s in segments), np.int64, len(segments))
    offsets = np.zeros(len(segments) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    events = [e for s in segments for e in s]
    currents = [e for _, e in requests]
    t = np.fromiter((e.ts_us for e in currents), np.int64, n)
    seg = np.fromiter((i for i, _ in requests), np.int64, n)
    pos = np.fromiter(
        (
            offsets[i] + bisect_left(segments[i], e.key, key=event_key)
            for i, e in requests
        ),
        np.int64,
        n,
    )
    base = int(t.min()) - max(s.shift_us + s.window_us for s in compiled) - 1
    span = int(t.max()) - base + 1
    if len(segments) * (span + 1) >= KEY_LIMIT:  # a batch spanning ages: split it
        for i in range(len(segments)):
            picked = [k for k in range(n) if requests[k][0] == i]
            if picked:
                one = [(0, requests[k][1]) for k in picked]
                out[picked] = evaluate_many(compiled, columns, [segments[i]], one)
        return out
    ts = np.fromiter(map(_TS, events), np.int64, len(events))
    keyed = np.repeat(np.arange(len(segments), dtype=np.int64), sizes) * (span + 1)
    keyed += np.clip(ts - base, 0, span)
    origin = seg * (span + 1) - base

    def series(spec: Spec) -> Prefixes:
        where = spec.where
        ci = columns[spec.column] if spec.column is not None else -1
        wi = columns[where.column] if where is not None else -1
        return _series(events, currents, ci, where, wi)

    _windows(compiled, (keyed, origin, t, pos), series, out)
    return out


def _windows(
    compiled: Sequence[Spec],
    at: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    series_of: Callable[[Spec], Prefixes],
    out: np.ndarray,
) -> None:
    """Every feature into `out`: each spec's window [start, end) by binary search
    on the (segment, time) keys, then its aggregate (series shared per column
    and filter). `at`: sorted keys, each request's segment origin, time and
    position."""
    keyed, origin, t, pos = at
    cache: dict[tuple[str | None, Where | None], Prefixes] = {}
    for j, spec in enumerate(compiled):
        hi = t - spec.shift_us
        start = np.minimum(
            np.searchsorted(keyed, origin + hi - spec.window_us, "right"), pos
        )
        end = (
            pos
            if spec.shift_us == 0
            else np.minimum(np.searchsorted(keyed, origin + hi, "right"), pos)
        )
        series = cache.get((spec.column, spec.where))
        if series is None:
            series = cache[(spec.column, spec.where)] = series_of(spec)
        own = series.current_valid & (spec.shift_us == 0)
        column = aggregate(spec.function, series, start, end, own)
        if spec.fill is not None:
            column = np.where(np.isnan(column), spec.fill, column)
        out[:, j] = column


@dataclass
class Flat:
    """Events of several entities, columnar, for `evaluate_flat`.

    `values` follow the view's value columns: (data, valid) with data int64 or
    float64. `hidden` events hold a position only (a retried event, the twin of
    a held one) and are never aggregated.
    """

    seg: np.ndarray  # int64: the entity's segment
    ts: np.ndarray  # int64
    ids: np.ndarray  # int64
    values: list[tuple[np.ndarray, np.ndarray]]
    hidden: np.ndarray  # bool


_NUMERIC_OPS = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def _number(v: object) -> bool:
    return type(v) in (int, float)


def vectorised(where: Where | None) -> bool:
    """Whether `evaluate_flat` evaluates this filter (numeric targets)."""
    if where is None:
        return True
    targets = where.value if isinstance(where.value, tuple) else (where.value,)
    return all(_number(t) for t in targets)


def _mask(where: Where | None, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`where.test` of each value, vectorised (NULL never passes)."""
    if where is None:
        return valid
    if isinstance(where.value, tuple):
        return valid & np.isin(data, np.array(where.value))
    passed: np.ndarray = valid & _NUMERIC_OPS[where.op](data, where.value)
    return passed


def evaluate_flat(
    compiled: Sequence[Spec],
    columns: Mapping[str, int],
    stored: Flat,
    requests: Flat,
) -> np.ndarray:
    """`evaluate_many` over columnar events: each request (not hidden: it joins
    its entity's events) sees its segment's events strictly before it in
    (timestamp, id) order, plus itself. Numeric value columns, integer ids and
    numeric filters only (`vectorised`); the same windows and arithmetic."""
    n, held = len(requests.ts), len(stored.ts)
    out = np.full((n, len(compiled)), np.nan)
    if n == 0:
        return out
    t = requests.ts
    base = int(t.min()) - max(s.shift_us + s.window_us for s in compiled) - 1
    span = int(t.max()) - base + 1
    top = max(int(stored.seg.max()) if held else 0, int(requests.seg.max()))
    if (top + 1) * (span + 1) >= KEY_LIMIT:
        msg = "a batch spanning ages: evaluate it per entity"
        raise OverflowError(msg)
    seg = np.concatenate([stored.seg, requests.seg])
    ts = np.concatenate([stored.ts, requests.ts])
    hidden = np.concatenate([stored.hidden, requests.hidden])
    # a hidden twin sorts before its visible one: the window of a retry ends
    # before both
    order = _merged(stored, requests, base, span)
    if order is None:
        order = np.lexsort(
            (~hidden, np.concatenate([stored.ids, requests.ids]), ts, seg)
        )
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    pos = rank[held:]
    seg, ts, hidden = seg[order], ts[order], hidden[order]
    keyed = seg * (span + 1) + np.clip(ts - base, 0, span)
    origin = requests.seg * (span + 1) - base

    def series(spec: Spec) -> Prefixes:
        return _flat_series(spec, columns, (stored, requests), order, hidden)

    _windows(compiled, (keyed, origin, t, pos), series, out)
    return out


def _merged(stored: Flat, requests: Flat, base: int, span: int) -> np.ndarray | None:
    """The order `evaluate_flat` sorts stored events and requests in, by
    (segment, time, id, hidden first), found by merging the requests into the
    stored events, which every entity's state holds sorted already: a binary
    search per request instead of a sort of everything (a 1,000-row batch
    over ~45,000 stored events: the sort was most of the windows' time).
    None when the stored events are not so sorted (or hidden): sort them."""
    held, n = len(stored.ts), len(requests.ts)
    if stored.hidden.any():
        return None
    # (segment, time) as one key; times before `base` (older than every
    # window) clip to the segment's first key, ahead of every request
    key_s = stored.seg * (span + 1) + np.clip(stored.ts - base, 0, span)
    same = stored.seg[1:] == stored.seg[:-1]
    tie = same & (stored.ts[1:] == stored.ts[:-1])
    if bool((key_s[1:] < key_s[:-1]).any()) or bool(
        (
            (same & (stored.ts[1:] < stored.ts[:-1]))
            | (tie & (stored.ids[1:] <= stored.ids[:-1]))
        ).any()
    ):
        return None  # not sorted by (segment, time, id)
    key_r = requests.seg * (span + 1) + (requests.ts - base)
    mine = np.lexsort((~requests.hidden, requests.ids, requests.ts, requests.seg))
    key_r, ids_r, hidden_r = key_r[mine], requests.ids[mine], requests.hidden[mine]
    lo = np.searchsorted(key_s, key_r, "left")
    hi = np.searchsorted(key_s, key_r, "right")
    at = lo.copy()
    for k in np.flatnonzero(hi > lo).tolist():  # same entity and microsecond
        ids = stored.ids[lo[k] : hi[k]]
        side: Literal["left", "right"] = "left" if hidden_r[k] else "right"
        at[k] = lo[k] + int(np.searchsorted(ids, ids_r[k], side))  # twin first
    # request k (in merged order) lands at at[k] + k; the stored events fill
    # the other places in their order
    order = np.empty(held + n, dtype=np.int64)
    places = at + np.arange(n)
    order[places] = held + mine
    free = np.ones(held + n, dtype=bool)
    free[places] = False
    order[free] = np.arange(held)
    return order


def _flat_series(
    spec: Spec,
    columns: Mapping[str, int],
    halves: tuple[Flat, Flat],
    order: np.ndarray,
    hidden: np.ndarray,
) -> Prefixes:
    def pick(flat: Flat) -> tuple[np.ndarray, np.ndarray]:
        n = len(flat.ts)
        if spec.column is None:
            data, valid = np.ones(n), np.ones(n, dtype=bool)
        else:
            data, valid = flat.values[columns[spec.column]]
        if spec.where is not None:
            wdata, wvalid = flat.values[columns[spec.where.column]]
            valid = _mask(spec.where, wdata, wvalid & valid)
        return valid, np.where(valid, data, 0).astype(np.float64)

    held_valid, held_values = pick(halves[0])
    current_valid, current = pick(halves[1])
    valid = np.concatenate([held_valid, current_valid])[order] & ~hidden
    values = np.where(valid, np.concatenate([held_values, current])[order], 0.0)
    return prefixes(valid, values, current_valid, current)


def _apply(function: Function, values: list[float], fill: float | None) -> float | None:
    n = len(values)
    result: float | None
    if function == "count":
        result = float(n)
    elif n == 0:
        result = None
    elif function in ("sum", "mean"):
        result = math.fsum(values) / (n if function == "mean" else 1)
    elif function == "min":
        result = min(values)
    elif function == "max":
        result = max(values)
    elif function == "last":
        result = values[-1]
    elif n < 2:  # noqa: PLR2004  (sample standard deviation)
        result = None
    else:
        mean = math.fsum(values) / n
        result = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return fill if result is None else result


def evaluate_few(
    compiled: Sequence[Spec],
    columns: Mapping[str, int],
    events: Sequence[Event],
    currents: Sequence[Event],
) -> list[list[float | None]]:
    """Every feature of a few requests of one entity, in plain Python.

    The same windows as `evaluate_many` (binary search over the entity's valid
    events, then the window's values), without numpy's per-call overhead: the
    path of single-row requests. Sums are exact (`math.fsum`).
    """
    ts = [e.ts_us for e in events]
    prepared: dict[tuple[str | None, Where | None], tuple[list[int], list[float]]] = {}
    rows: list[list[float | None]] = []
    for current in currents:
        pos = bisect_left(events, current.key, key=event_key)
        t = current.ts_us
        row: list[float | None] = []
        for spec in compiled:
            found = prepared.get((spec.column, spec.where))
            if found is None:
                ci = columns[spec.column] if spec.column is not None else -1
                found = _valid(events, ci, spec.where, columns)
                prepared[(spec.column, spec.where)] = found
            index, values = found
            hi = t - spec.shift_us
            # positions among the valid events: (hi - window, hi], before `pos`
            start = bisect_left(index, bisect_right(ts, hi - spec.window_us, hi=pos))
            end = bisect_left(index, bisect_right(ts, hi, hi=pos))
            row.append(_windowed(spec, values[start:end], current, columns))
        rows.append(row)
    return rows


def evaluate_one(
    compiled: Sequence[Spec],
    columns: Mapping[str, int],
    current: Event,
    *,
    ts: np.ndarray,
    ids: np.ndarray,
    values: Sequence[tuple[np.ndarray, np.ndarray]],
) -> list[float | None]:
    """`evaluate` of one request over an entity's columnar events: `ts` and
    integer `ids` sorted by key, no anonymous one, `values` numeric (data,
    valid) per value column, numeric filters only (`vectorised`). The same
    windows and arithmetic as `evaluate_few`, with no Python object per stored
    event: the single-row request path."""
    t = current.ts_us
    lo = int(np.searchsorted(ts, t, "left"))
    hi = int(np.searchsorted(ts, t, "right"))
    pos = lo + int((ids[lo:hi] < current.id).sum()) if hi > lo else lo
    prepared: dict[tuple[str | None, Where | None], tuple[list[int], list[float]]] = {}
    row: list[float | None] = []
    for spec in compiled:
        found = prepared.get((spec.column, spec.where))
        if found is None:
            if spec.column is None:
                valid = np.ones(pos, dtype=bool)
                data = np.ones(pos)
            else:
                data, valid = values[columns[spec.column]]
                data, valid = data[:pos], valid[:pos]
            if spec.where is not None:
                wdata, wvalid = values[columns[spec.where.column]]
                valid = _mask(spec.where, wdata[:pos], wvalid[:pos] & valid)
            kept = np.flatnonzero(valid)
            found = (
                ts[kept].tolist(),
                data[kept].astype(np.float64).tolist(),
            )
            prepared[(spec.column, spec.where)] = found
        held_ts, held_values = found
        end_t = t - spec.shift_us
        start = bisect_right(held_ts, end_t - spec.window_us)
        window = held_values[start : bisect_right(held_ts, end_t)]
        row.append(_windowed(spec, window, current, columns))
    return row


def _windowed(
    spec: Spec, window: list[float], current: Event, columns: Mapping[str, int]
) -> float | None:
    """`spec` over the held values in its window, plus the current event's own
    value when the window ends at it (no shift)."""
    if spec.shift_us == 0:
        own = _value(current, columns, spec)
        if own is not None:
            window = [*window, own]
    return _apply(spec.function, window, spec.fill)


def _value(e: Event, columns: Mapping[str, int], spec: Spec) -> float | None:
    """The event's value for `spec` (1.0 for a row count), None if it is left out."""
    where = spec.where
    if where is not None and not where.test(e.values[columns[where.column]]):
        return None
    if spec.column is None:
        return 1.0
    v = e.values[columns[spec.column]]
    return None if v is None else float(v)


def _valid(
    events: Sequence[Event], ci: int, where: Where | None, columns: Mapping[str, int]
) -> tuple[list[int], list[float]]:
    wi = columns[where.column] if where is not None else -1
    index: list[int] = []
    values: list[float] = []
    for k, e in enumerate(events):
        if where is not None and not where.test(e.values[wi]):
            continue
        if ci < 0:
            index.append(k)
            values.append(1.0)
            continue
        v = e.values[ci]
        if v is not None:
            index.append(k)
            values.append(float(v))
    return index, values


def evaluate(
    compiled: Sequence[Spec],
    columns: Mapping[str, int],
    events: Sequence[Event],
    current: Event,
) -> list[float | None]:
    """Every feature for `current`, given the entity's events sorted by key.

    Events after `current` in (timestamp, id) order are ignored: a late or
    retried event never sees its future. `current` itself counts once.
    """
    return evaluate_few(compiled, columns, events, [current])[0]
