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
from typing import Literal

from aistack.errors import DeclarationError

Function = Literal["count", "sum", "mean", "min", "max", "stddev", "last"]
FUNCTIONS: tuple[Function, ...] = (
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "stddev",
    "last",
)
Op = Literal["==", "!=", "<", "<=", ">", ">=", "in"]
Scalar = int | float | str
Value = int | float | str | None

_US = timedelta(microseconds=1)


def quote(name: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes escaped."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Scalar) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"filter value {value!r}: expected a number or a string"
        raise DeclarationError(msg)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float) and not math.isfinite(value):
        raise DeclarationError(f"filter value {value!r}: expected a finite number")
    return repr(value)


def window_label(window: timedelta) -> str:
    """`1d`, `6h`, `15m`, `30s` or `250000us`: the shortest exact unit."""
    us = window // _US
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us // 1_000_000}s" if us % 1_000_000 == 0 else f"{us}us"


@dataclass(frozen=True)
class Where:
    """A row filter evaluated the same way offline (SQL) and online (Python).

    A row whose column is NULL never passes (as in SQL).
    """

    column: str
    op: Op
    value: Scalar | tuple[Scalar, ...]

    def __post_init__(self) -> None:
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        if (self.op == "in") != isinstance(self.value, tuple):
            msg = f"filter on {self.column!r}: 'in' takes a tuple, other ops a scalar"
            raise DeclarationError(msg)
        for v in values:
            _literal(v)

    def sql(self) -> str:
        """The predicate as SQL."""
        column = quote(self.column)
        if isinstance(self.value, tuple):
            return f"{column} IN ({', '.join(_literal(v) for v in self.value)})"
        op = "=" if self.op == "==" else self.op
        return f"{column} {op} {_literal(self.value)}"

    def test(self, value: Value) -> bool:
        """Whether a row with `value` in the column passes."""
        if value is None:
            return False
        target = self.value
        try:
            if self.op == "in":
                assert isinstance(target, tuple)
                return value in target
            assert not isinstance(target, tuple)
            return bool(_COMPARE[self.op](value, target))
        except TypeError:
            return False


_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class Aggregation:
    """`function(column)` over one or more windows, one feature per window.

    `column` may be None only for `count` (count rows). `shift` moves the window
    back (only rows older than `shift` count: e.g. the label delay). `where`
    keeps only matching rows. `fill` is the value of an empty window (NULL
    otherwise; `count` is 0). `name` is a format string with `{window}` (`1d`,
    `6h`...); default `<function>_<column>_{window}`.
    """

    function: Function
    windows: tuple[timedelta, ...]
    column: str | None = None
    shift: timedelta = timedelta(0)
    where: Where | None = None
    fill: float | None = None
    name: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            msg = f"aggregation {self.function!r}: expected one of {FUNCTIONS}"
            raise DeclarationError(msg)
        if self.column is None and self.function != "count":
            msg = f"aggregation {self.function}: needs a column (only count has none)"
            raise DeclarationError(msg)
        if not self.windows or any(w < _US for w in self.windows):
            msg = f"aggregation {self.label}: windows must be non-empty and positive"
            raise DeclarationError(msg)
        if len(set(self.windows)) != len(self.windows):
            raise DeclarationError(f"aggregation {self.label}: repeated window")
        if any(w % _US for w in (*self.windows, self.shift)):
            msg = f"aggregation {self.label}: windows and shift are whole microseconds"
            raise DeclarationError(msg)
        if self.shift < timedelta(0):
            raise DeclarationError(f"aggregation {self.label}: shift must be >= 0")
        if self.name is not None and "{window}" not in self.name:
            msg = f"aggregation name {self.name!r}: must contain '{{window}}'"
            raise DeclarationError(msg)

    @property
    def label(self) -> str:
        """`function(column)` for messages."""
        return f"{self.function}({self.column or '*'})"

    def feature_name(self, window: timedelta) -> str:
        """The feature computed over `window`."""
        pattern = self.name or f"{self.function}_{self.column or 'rows'}_{{window}}"
        return pattern.format(window=window_label(window))


@dataclass(frozen=True)
class Spec:
    """One compiled feature: an aggregation over one window."""

    name: str
    function: Function
    column: str | None
    window_us: int
    shift_us: int
    where: Where | None
    fill: float | None


def specs(aggregations: Sequence[Aggregation]) -> list[Spec]:
    """Every feature of `aggregations`, in declaration order (window by window)."""
    return [
        Spec(
            a.feature_name(w),
            a.function,
            a.column,
            w // _US,
            a.shift // _US,
            a.where,
            a.fill,
        )
        for a in aggregations
        for w in a.windows
    ]


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
