"""Windowed aggregation declarations: function, windows, shift, filter, fill.

`aistack.features.aggregations` compiles them to DuckDB SQL and evaluates them
online; both follow one definition (see there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from aistack.errors import DeclarationError
from aistack.sql import quote

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


# --- online: the same definition over an entity's events ---------------------
