"""What a use case watches in production: drift, alerts, guards, business metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from aistack.contract.drift import DriftSettings
from aistack.contract.names import _ident

Signal = Literal[
    "drift_share",
    "performance_drop",
    "error_rate",
    "latency_p99_ms",
    "popularity_psi",
    "coverage_drop",
]
RANKING_SIGNALS = ("popularity_psi", "coverage_drop")
"""Signals `aistack monitor` observes on a ranking use case's served answers."""


@dataclass(frozen=True)
class AlertRule:
    """Fire when `signal` exceeds `threshold`; once per episode, not per request.

    Signals: `drift_share` (share of drifted features), `performance_drop` (the
    primary metric at training minus its live value), `error_rate` (share of
    5xx answers) and `latency_p99_ms`; for a ranking use case `popularity_psi`
    (the shown items' popularity against the batch top-K) and `coverage_drop`
    (1 - distinct items shown / those expected for as many answers).
    """

    name: str
    signal: Signal
    threshold: float

    def __post_init__(self) -> None:
        _ident("alert rule", self.name)


@dataclass(frozen=True)
class RolloutGuards:
    """When a shadow or canary challenger is rolled back, or promoted.

    Checked on the challenger's requests every evaluation interval once it has
    `min_requests`: error rate, p99 latency, and the PSI of its scores against
    the champion's in the same interval; `aistack monitor` adds live performance
    (primary metric drop) when labels have arrived. Promotion after
    `promote_after` challenger requests with every guard holding.

    A score shift breaks the guard only when it is both large (PSI above
    `max_score_psi`) and real: a chi-square test of the two arms' counts over
    the champion's decile bins rejects "same distribution" at
    `score_shift_alpha`. PSI alone is biased upward on small windows (a healthy
    canary of 100 requests reads above 0.25 about 1 time in 10); with the test
    a healthy canary is rolled back at most `score_shift_alpha` of the time.
    """

    max_error_rate: float = 0.01
    max_latency_p99_ms: float = 50.0
    max_score_psi: float = 0.25
    score_shift_alpha: float = 0.001
    max_performance_drop: float = 0.05
    min_requests: int = 100
    promote_after: int = 1000


@dataclass(frozen=True)
class BusinessMetric:
    """The outcome an A/B test compares between arms.

    `outcome(frame)` maps logged predictions joined with their labels (columns
    of the payload, `score`, `decision`, `label`) to one value per row, NaN where
    a row does not count. `kind` picks the test: two-proportion z-test or Welch's
    t-test of the mean difference.
    """

    name: str
    kind: Literal["proportion", "mean"]
    outcome: Callable[[pd.DataFrame], pd.Series]
    minimum_detectable_effect: float


@dataclass(frozen=True)
class Monitoring:
    """What a use case watches in production and the thresholds it declares."""

    drift: DriftSettings = field(default_factory=DriftSettings)
    alerts: tuple[AlertRule, ...] = ()
    guards: RolloutGuards = field(default_factory=RolloutGuards)
    business: BusinessMetric | None = None
