"""What a model is trained on and must pass: labels, split, trainers, metrics, gates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from aistack.contract.names import _ident
from aistack.contract.tuning import Choice, Distribution, FloatRange, IntRange
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
    `timestamp` is the row's event time; rows without a clock (independent
    measurements) leave it out: they cannot be split by time nor joined to
    feature views, and monitoring places them in time by when they were scored.
    `delay` is how long after the event its label becomes known.
    """

    table: str
    id: str
    label: str
    columns: tuple[str, ...]
    timestamp: str | None = None
    delay: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if not self.table.startswith("silver."):
            raise DeclarationError(f"labels: table {self.table!r} is not silver")

    @property
    def order(self) -> list[str]:
        """Columns that order rows deterministically: (timestamp, id), or id alone."""
        return [self.timestamp, self.id] if self.timestamp else [self.id]


Task = Literal["binary", "multiclass", "regression", "anomaly", "ranking"]
"""What a model predicts; it decides how its output is read and served.

binary: P(positive) and a decision at the serving threshold; multiclass: the
class and its probabilities; regression: a value; anomaly: an anomaly score
(higher: more anomalous) and a flag at the threshold; ranking: top-K items.
"""

TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression", "anomaly", "ranking")
_SUM_TOLERANCE = 1e-9
SplitKind = Literal["time", "random", "stratified", "group"]


@dataclass(frozen=True)
class Split:
    """How labelled rows are split into train, (validation,) test; deterministic.

    `time` (the default): `train_days`, a gap of `delay_days` (labels not known
    yet when training) and `test_days`, counted back from the last labelled day,
    or from `start` forward when given; with `fractions` instead, rows in time
    order are cut by those fractions. `random`: a seeded permutation of the rows
    cut by `fractions`. `stratified`: the same within each label value.
    `group`: the same within each value of `group` (e.g. per user, 8:1:1, as
    RecBole evaluates recommenders). `fractions` are (train, test) or
    (train, validation, test). `seed` defaults to the workspace seed. Every
    split is recorded on the training run (kind, fractions, seed, row counts
    and a digest of the test ids).
    """

    kind: SplitKind = "time"
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    fractions: tuple[float, ...] | None = None
    group: str | None = None
    seed: int | None = None
    start: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("time", "random", "stratified", "group"):
            raise DeclarationError(f"split: unknown kind {self.kind!r}")
        if min(self.train_days, self.test_days) < 1 or self.delay_days < 0:
            msg = "split: train_days and test_days must be >= 1, delay_days >= 0"
            raise DeclarationError(msg)
        if self.fractions is not None:
            f = self.fractions
            if (
                len(f) not in (2, 3)
                or min(f) <= 0
                or abs(sum(f) - 1.0) > _SUM_TOLERANCE
            ):
                msg = (
                    f"split: fractions {f} must be 2 or 3 positive numbers "
                    "(train, [validation,] test) summing to 1"
                )
                raise DeclarationError(msg)
        if self.kind == "group" and not self.group:
            raise DeclarationError("split: kind 'group' needs the group column")
        if self.kind != "group" and self.group:
            raise DeclarationError("split: group is only read by kind 'group'")
        if self.kind != "time" and self.start is not None:
            raise DeclarationError("split: start anchors a time split only")

    @property
    def parts(self) -> tuple[float, ...]:
        """The fractions to cut by (default (0.8, 0.2) for non-time kinds)."""
        return self.fractions or (0.8, 0.2)

    @property
    def by_days(self) -> bool:
        """Whether this is a time split by days (the handbook's protocol)."""
        return self.kind == "time" and self.fractions is None

    def record(self) -> dict[str, object]:
        """The declaration, as recorded on a training run and in the training key."""
        out: dict[str, object] = {"kind": self.kind}
        if self.by_days:
            out |= {
                "train_days": self.train_days,
                "delay_days": self.delay_days,
                "test_days": self.test_days,
                "start": self.start.isoformat() if self.start else None,
            }
        else:
            out |= {"fractions": list(self.parts), "group": self.group}
        out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class Evaluation:
    """How the test part is formed and scored, beyond the split.

    `exclude_known_positives` names an entity column (e.g. the card): a test row
    is dropped when its entity had a positive label on a row from the train
    start up to `delay_days` before the row's test day, since such an entity is
    already blocked in production and its rows would never be scored (the fraud
    handbook's protocol, `get_train_test_set`). It needs a time split by days.
    Every metric and gate reads the test part formed this way.

    `slices` name groupings of the test rows (a function of the scored test
    frame giving each row's group, e.g. an age band): the model card reports
    every metric per group and the gaps in true and false positive rates
    between groups. `intended_use` is the card's statement of what the model
    is for and not for.
    """

    exclude_known_positives: str | None = None
    slices: Mapping[str, Callable[[pd.DataFrame], pd.Series]] = field(
        default_factory=dict
    )
    intended_use: str = ""

    def record(self) -> dict[str, object]:
        """The declaration, as recorded on a training run and in the training key."""
        return {"exclude_known_positives": self.exclude_known_positives}


@dataclass(frozen=True)
class Resampling:
    """Rebalance the classes of the training rows (binary task), as the fraud
    handbook's imbalance chapter does; validation and test rows are never
    resampled.

    `undersample`: keep every positive and a seeded random `ratio` x as many
    negatives (all of them when there are fewer). `oversample`: keep every row
    and draw positives with replacement until there are negatives / `ratio`.
    """

    kind: Literal["undersample", "oversample"]
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("undersample", "oversample"):
            msg = f"resampling: unknown kind {self.kind!r} (undersample, oversample)"
            raise DeclarationError(msg)
        if not self.ratio > 0:
            raise DeclarationError(f"resampling: ratio must be > 0, got {self.ratio}")


@dataclass(frozen=True)
class Trainer:
    """A model to train: `build(seed)` returns an unfitted model.

    The model needs only `fit(X, y)` (`fit(X)` when not `supervised`) and, by
    task: `predict_proba` (binary, multiclass; binary also accepts
    `decision_function`), `predict` (regression), `score_samples` or
    `decision_function` (anomaly). A scikit-learn estimator, an XGBoost model,
    a closed-form class of your own all fit. `inputs` are the model input
    columns it reads (default: every feature). `requirements` are the pip
    packages its model needs at load time beyond aistack's own (logged with the
    model; the package of the model's class is added when installed).
    `search_space` maps estimator parameters to the ranges `aistack tune`
    explores; `params` are set on the built estimator (the platform fills them
    with the last tuned parameters). `interval` (regression) is the coverage of
    a residual-quantile interval around each value, calibrated on the split's
    validation part (split conformal); a model with its own
    `predict_interval(X)` (rows x [low, high]) is served with that instead.
    `resampling` (binary) rebalances the training rows only (see `Resampling`).
    """

    name: str
    build: Callable[[int], Any]
    supervised: bool = True
    inputs: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    search_space: Mapping[str, Distribution] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    interval: float | None = None
    resampling: Resampling | None = None

    def __post_init__(self) -> None:
        _ident("trainer", self.name)
        if self.interval is not None and not 0 < self.interval < 1:
            msg = (
                f"trainer {self.name}: interval is a coverage in (0, 1), "
                f"got {self.interval}"
            )
            raise DeclarationError(msg)
        for name, dist in self.search_space.items():
            if not isinstance(dist, IntRange | FloatRange | Choice):
                msg = (
                    f"trainer {self.name}: search_space[{name!r}] is "
                    f"{type(dist).__name__}, expected IntRange, FloatRange or Choice"
                )
                raise DeclarationError(msg)

    def model(self, seed: int) -> Any:  # noqa: ANN401  (any estimator)
        """`build(seed)` with `params` set (`set_params`), e.g. tuned ones."""
        estimator = self.build(seed)
        if self.params:
            estimator.set_params(**self.params)
        return estimator


@dataclass(frozen=True)
class Gates:
    """What a challenger must pass to become champion.

    `metric_floors`: the worst acceptable test value of each metric (a minimum,
    or a maximum for a lower-is-better metric). `irrelevant_columns`: scores must not
    change when these are shuffled. `monotonic`: mean score must not fall
    (increasing) or rise (decreasing) by more than `monotonic_tolerance` along the
    feature's 50th..99th percentile grid. `max_latency_ms`: median single-row
    predict time. `score_range`: bounds of every score (default: [0, 1] for
    binary tasks, whose scores are probabilities; no bound otherwise). A
    challenger must also score at least the champion's
    `primary_metric` on the same holdout, less `champion_tolerance`.
    """

    primary_metric: str
    metric_floors: Mapping[str, float] = field(default_factory=dict)
    score_range: tuple[float, float] | None = None
    irrelevant_columns: tuple[str, ...] = ()
    monotonic: Mapping[str, Literal["increasing", "decreasing"]] = field(
        default_factory=dict
    )
    monotonic_tolerance: float = 0.02
    max_latency_ms: float = 50.0
    champion_tolerance: float = 0.0
