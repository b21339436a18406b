"""Windowed aggregations: one declaration, compiled to DuckDB SQL and to online code.

A feature of an `AggregationView` is `function(column)` over the entity's events
in a half-open window: (t - window, t] with the event itself included, or, with a
`shift`, (t - shift - window, t - shift] (rows whose label was known by t).
Events are ordered by (timestamp, event id): of two events of one entity in the
same microsecond, the first does not see the second, exactly as a stream would
score them. The offline compiler (`view_sql`) and the online evaluator
(`evaluate`) implement this one definition; tests hold them equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from aistack.contract.aggregations import (
    Aggregation,
    Function,
    Spec,
    Value,
    Where,
    specs,
)
from aistack.sql import quote

_US = timedelta(microseconds=1)


# --- offline: DuckDB SQL ----------------------------------------------------


def _bound_name(us: int) -> str:
    return f"_n_le_{us}"


def _agg_sql(spec: Spec, frame: str) -> str:
    conditions = []
    if spec.where is not None:
        conditions.append(spec.where.sql())
    if spec.column is not None:
        conditions.append(f"{quote(spec.column)} IS NOT NULL")
    value = f"CAST({quote(spec.column)} AS DOUBLE)" if spec.column else ""
    func = {
        "count": f"count({value or '*'})",
        "sum": f"sum({value})",
        "mean": f"avg({value})",
        "min": f"min({value})",
        "max": f"max({value})",
        "stddev": f"stddev_samp({value})",
        "last": f"arg_max({value}, _rn)",
    }[spec.function]
    filtered = (
        f"{func} FILTER (WHERE {' AND '.join(conditions)})" if conditions else func
    )
    expr = f"{filtered} OVER {frame}"
    if spec.function == "count":
        expr = f"CAST({expr} AS DOUBLE)"
    if spec.fill is not None:
        expr = f"COALESCE({expr}, {float(spec.fill)!r})"
    return expr


def view_sql(
    source: str,
    *,
    entity: str,
    event_id: str,
    timestamp: str,
    aggregations: Sequence[Aggregation],
    since: str | None = None,
) -> str:
    """SQL giving one row per event of `source`: id, entity, event_time, features.

    Each window is a frame of rows (start, end] in (timestamp, id) order, where
    start and end count the entity's rows with timestamp <= t - shift - window
    and <= t - shift (a RANGE count), so ties and the half-open bounds are exact.
    `since` (a SQL condition on the source) limits the rows read (increments:
    the new events and everything inside the longest window before them).
    """
    compiled = specs(aggregations)
    part = f"PARTITION BY {quote(entity)}"
    ts = quote(timestamp)
    bounds = sorted(
        {s.shift_us + s.window_us for s in compiled} | {s.shift_us for s in compiled}
    )
    counts = [
        f"count(*) OVER ({part} ORDER BY {ts} RANGE BETWEEN UNBOUNDED PRECEDING AND "
        f"INTERVAL {us} MICROSECOND PRECEDING) AS {_bound_name(us)}"
        for us in bounds
        if us > 0
    ]
    where = f" WHERE {since}" if since else ""
    ranked = (
        f"SELECT *, row_number() OVER ({part} ORDER BY {ts}, {quote(event_id)}) AS _rn"
        + "".join(f", {c}" for c in counts)
        + f" FROM {source}{where}"
    )
    selects = [
        f"{quote(event_id)}",
        f"{quote(entity)}",
        f"{ts} AS event_time",
    ]
    order = f"{part} ORDER BY {ts}, {quote(event_id)}"
    for spec in compiled:
        start = f"_rn - {_bound_name(spec.shift_us + spec.window_us)} - 1"
        end = (
            f"_rn - {_bound_name(spec.shift_us)} PRECEDING"
            if spec.shift_us
            else "CURRENT ROW"
        )
        frame = f"({order} ROWS BETWEEN {start} PRECEDING AND {end})"
        selects.append(f"{_agg_sql(spec, frame)} AS {quote(spec.name)}")
    return f"SELECT {', '.join(selects)} FROM ({ranked})"


# --- online: the same definition over an entity's events ---------------------


@dataclass(frozen=True)
class Event:
    """One event of an entity as the online state keeps it.

    `values` follow the view's value columns. Ties on the timestamp are broken
    by the id; `anonymous` events (a request without an id, kept under its
    request id) sort after every declared id.
    """

    ts_us: int
    id: Value
    values: tuple[Value, ...]
    anonymous: bool = False

    @property
    def key(self) -> tuple[int, bool, Value]:
        """Sort key: (timestamp, anonymous last, id)."""
        return (self.ts_us, self.anonymous, self.id)


def _apply(function: Function, values: list[float], fill: float | None) -> float | None:
    n = len(values)
    result: float | None
    if function == "count":
        result = float(n)
    elif n == 0:
        result = None
    elif function == "sum":
        result = math.fsum(values)
    elif function == "mean":
        result = math.fsum(values) / n
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
    t, key = current.ts_us, current.key
    past = [e for e in events if e.key < key]
    past.append(current)
    out: list[float | None] = []
    cache: dict[tuple[int, int, Where | None, str | None], list[float]] = {}
    for spec in compiled:
        hi = t - spec.shift_us
        lo = hi - spec.window_us
        cache_key = (lo, hi, spec.where, spec.column)
        values = cache.get(cache_key)
        if values is None:
            values = []
            where = spec.where
            wi = columns[where.column] if where is not None else -1
            ci = columns[spec.column] if spec.column is not None else -1
            for e in past:
                if e.ts_us <= lo or e.ts_us > hi:
                    continue
                if where is not None and not where.test(e.values[wi]):
                    continue
                if ci < 0:
                    values.append(1.0)
                    continue
                v = e.values[ci]
                if v is not None:
                    values.append(float(v))
            cache[cache_key] = values
        out.append(_apply(spec.function, values, spec.fill))
    return out
