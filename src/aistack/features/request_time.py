"""Request-time features of a few rows without building a polars frame.

A use case declares its request-time features as polars expressions, and the
training set evaluates them with polars (`training.sets.with_request_features`).
For the one-row requests of a server, building the polars frame costs ~300 us
while the expressions themselves are a cast or a comparison. `RequestPlan`
compiles the common node kinds of an expression (column, numeric literal, cast
to Float64, comparisons and arithmetic, datetime parts) to plain Python with
polars' semantics, and gives up (None) on anything else: another node kind, a
NULL, a tz-aware datetime, a string where a number is expected. The caller then
evaluates with polars, so values are always the training path's.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import polars as pl

Row = Mapping[str, Any]
Node = Callable[[Row], Any]


_EXACT_INT = 2**53


class _Unsupported(Exception):
    """This expression or value is left to polars."""


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtEq": operator.le,
    "Gt": operator.gt,
    "GtEq": operator.ge,
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "Plus": operator.add,
    "Minus": operator.sub,
    "Multiply": operator.mul,
}
_PARTS: dict[str, Callable[[datetime], int]] = {
    "WeekDay": datetime.isoweekday,  # polars: Monday = 1 ... Sunday = 7
    "Hour": lambda d: d.hour,
    "Minute": lambda d: d.minute,
    "Second": lambda d: d.second,
    "Day": lambda d: d.day,
    "Month": lambda d: d.month,
    "Year": lambda d: d.year,
}


def _number(value: Any) -> int | float:  # noqa: ANN401
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unsupported
    if isinstance(value, int) and abs(value) >= _EXACT_INT:
        raise _Unsupported  # Int64 overflow and float rounding: polars decides
    return value


def _datetime(value: Any) -> datetime:  # noqa: ANN401
    if not isinstance(value, datetime) or value.tzinfo is not None:
        raise _Unsupported
    return value


def _column(name: str) -> Node:
    def node(row: Row) -> Any:  # noqa: ANN401
        value = row[name]
        if value is None:
            raise _Unsupported  # NULL propagation is left to polars
        return value

    return node


def _literal(spec: Any) -> Node:  # noqa: ANN401
    dyn = spec.get("Dyn") if isinstance(spec, dict) else None
    if not isinstance(dyn, dict) or len(dyn) != 1:
        raise _Unsupported
    kind, value = next(iter(dyn.items()))
    if kind not in ("Int", "Float") or isinstance(value, bool):
        raise _Unsupported
    constant = _number(value)
    return lambda _row: constant


def _cast(spec: dict[str, Any]) -> Node:
    if spec.get("dtype") != {"Literal": "Float64"}:
        raise _Unsupported
    inner = _compile(spec["expr"])

    def node(row: Row) -> float:
        value = inner(row)
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        return float(_number(value))

    return node


def _binary(spec: dict[str, Any]) -> Node:
    left, right, op = _compile(spec["left"]), _compile(spec["right"]), spec["op"]
    if op in _COMPARE:
        compare = _COMPARE[op]
        return lambda row: compare(_number(left(row)), _number(right(row)))
    if op in _ARITHMETIC:
        apply = _ARITHMETIC[op]
        return lambda row: apply(_number(left(row)), _number(right(row)))
    if op == "TrueDivide":

        def divide(row: Row) -> float:
            denominator = _number(right(row))
            if denominator == 0:
                raise _Unsupported  # inf / NaN: polars decides
            return _number(left(row)) / denominator

        return divide
    raise _Unsupported


def _function(spec: dict[str, Any]) -> Node:
    inputs, function = spec["input"], spec["function"]
    part = function.get("TemporalExpr") if isinstance(function, dict) else None
    if len(inputs) != 1 or not isinstance(part, str) or part not in _PARTS:
        raise _Unsupported
    inner, get = _compile(inputs[0]), _PARTS[part]
    return lambda row: get(_datetime(inner(row)))


def _compile(tree: Any) -> Node:  # noqa: ANN401
    if not isinstance(tree, dict) or len(tree) != 1:
        raise _Unsupported
    kind, spec = next(iter(tree.items()))
    if kind == "Column" and isinstance(spec, str):
        return _column(spec)
    if kind == "Alias":
        return _compile(spec[0])
    builders: dict[str, Callable[[Any], Node]] = {
        "Literal": _literal,
        "Cast": _cast,
        "BinaryExpr": _binary,
        "Function": _function,
    }
    if kind not in builders:
        raise _Unsupported
    return builders[kind](spec)


def _compile_expr(expr: pl.Expr) -> Node | None:
    try:
        return _compile(orjson.loads(expr.meta.serialize(format="json")))
    except Exception:  # unsupported here, or another polars version's format
        return None


@dataclass(frozen=True)
class RequestPlan:
    """Request-time features compiled once: `nodes` is None if any is unsupported."""

    names: tuple[str, ...]
    nodes: tuple[Node, ...] | None

    @classmethod
    def compile(cls, features: Mapping[str, pl.Expr]) -> RequestPlan:
        """Compile every expression, or none (all are then left to polars)."""
        nodes = [_compile_expr(e) for e in features.values()]
        names = tuple(features)
        if any(n is None for n in nodes):
            return cls(names, None)
        return cls(names, tuple(n for n in nodes if n is not None))

    def evaluate(self, rows: Sequence[Row]) -> dict[str, list[float]] | None:
        """Each feature's float value per row, or None: use polars for these rows."""
        if self.nodes is None:
            return None
        out: dict[str, list[float]] = {name: [] for name in self.names}
        try:
            for name, node in zip(self.names, self.nodes, strict=True):
                column = out[name]
                for row in rows:
                    value = node(row)
                    column.append(
                        float(
                            value if value is True or value is False else _number(value)
                        )
                    )
        except (_Unsupported, OverflowError, ArithmeticError, TypeError):
            return None
        return out


_PLANS: dict[int, tuple[Mapping[str, pl.Expr], RequestPlan]] = {}


def request_plan(features: Mapping[str, pl.Expr]) -> RequestPlan:
    """The compiled plan of a use case's declarations (memoised per mapping)."""
    held = _PLANS.get(id(features))
    if held is not None and held[0] is features:
        return held[1]
    plan = RequestPlan.compile(features)
    _PLANS[id(features)] = (features, plan)  # keeps `features` alive: ids stay unique
    return plan
