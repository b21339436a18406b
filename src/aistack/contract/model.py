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
"""A metric reads a scored frame (label-row columns, `label`, `score`)."""


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

    `metric_floors`: minimum test metrics. `irrelevant_columns`: scores must not
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
