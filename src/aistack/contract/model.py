"""What a model is trained on and must pass: labels, split, trainers, metrics, gates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pandas as pd

from aistack.contract.names import _ident
from aistack.errors import DeclarationError

Metric = Callable[[pd.DataFrame], float]
"""A metric reads a scored frame (label-row columns, `label`, `score`).

A plain function is greater-is-better; wrap a loss in `lower_is_better`.
"""


@dataclass(frozen=True)
class DirectedMetric:
    """A metric and its direction, as scikit-learn's `greater_is_better`.

    Champion choice, "not worse than the champion", metric bounds, the live
    performance drop and its alerts all read the direction.
    """

    fn: Callable[[pd.DataFrame], float]
    greater_is_better: bool = True

    def __call__(self, frame: pd.DataFrame) -> float:
        """The metric's value on a scored frame."""
        return float(self.fn(frame))


def lower_is_better(fn: Callable[[pd.DataFrame], float]) -> DirectedMetric:
    """Declare a loss (RMSE, log-loss): smaller values are better."""
    return DirectedMetric(fn, greater_is_better=False)


def greater_is_better(metric: Metric) -> bool:
    """The metric's direction (plain functions: greater is better)."""
    return bool(getattr(metric, "greater_is_better", True))


def gain(metric: Metric, value: float, reference: float) -> float:
    """How much better `value` is than `reference` (negative: worse)."""
    return value - reference if greater_is_better(metric) else reference - value


@dataclass(frozen=True)
class Labels:
    """Where labelled rows come from and when their label becomes known.

    `columns` are the request columns of a row (entity keys and raw fields that
    request-time features read); `id` identifies a row and is never a feature.
    """

    table: str
    id: str
    timestamp: str
    label: str
    columns: tuple[str, ...]
    delay: timedelta

    def __post_init__(self) -> None:
        if not self.table.startswith("silver."):
            raise DeclarationError(f"labels: table {self.table!r} is not silver")


@dataclass(frozen=True)
class Split:
    """Time split counted back from the last labelled day: train, delay, test."""

    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    def __post_init__(self) -> None:
        if min(self.train_days, self.test_days) < 1 or self.delay_days < 0:
            msg = "split: train_days and test_days must be >= 1, delay_days >= 0"
            raise DeclarationError(msg)


@dataclass(frozen=True)
class Trainer:
    """A model to train: `build(seed)` returns an unfitted scikit-learn estimator.

    `inputs` are the model input columns it reads (default: every feature).
    """

    name: str
    build: Callable[[int], Any]
    supervised: bool
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _ident("trainer", self.name)


@dataclass(frozen=True)
class Gates:
    """What a challenger must pass to become champion.

    `metric_floors`: the worst acceptable test value of each metric (a minimum,
    or a maximum for a lower-is-better metric). `irrelevant_columns`: scores must not
    change when these are shuffled. `monotonic`: mean score must not fall
    (increasing) or rise (decreasing) by more than `monotonic_tolerance` along the
    feature's 50th..99th percentile grid. `max_latency_ms`: median single-row
    predict time. A challenger must also score at least the champion's
    `primary_metric` on the same holdout, less `champion_tolerance`.
    """

    primary_metric: str
    metric_floors: Mapping[str, float] = field(default_factory=dict)
    score_range: tuple[float, float] = (0.0, 1.0)
    irrelevant_columns: tuple[str, ...] = ()
    monotonic: Mapping[str, Literal["increasing", "decreasing"]] = field(
        default_factory=dict
    )
    monotonic_tolerance: float = 0.02
    max_latency_ms: float = 50.0
    champion_tolerance: float = 0.0
