"""What a use case declares, and how the platform finds use cases.

A use case is a package exposing one `UseCase` object through the entry-point
group `aistack.use_cases`. The platform reads the declaration and executes it; it
never imports a use case by name. Declarations check themselves when built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Any, Literal

import pandas as pd
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from aistack.errors import DeclarationError, UseCaseNotFoundError
from aistack.platform.aggregations import Aggregation, Spec, specs
from aistack.platform.drift import DriftSettings

ENTRY_POINT_GROUP = "aistack.use_cases"
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

Metric = Callable[[pd.DataFrame], float]
"""A metric reads a scored frame (label-row columns, `label`, `score`)."""


def _ident(kind: str, value: str) -> str:
    if not _IDENT.match(value):
        msg = f"{kind} {value!r}: expected a lower snake case identifier"
        raise DeclarationError(msg)
    return value


@dataclass(frozen=True)
class Batch:
    """One batch of raw rows from a source; ingesting the same id twice is a no-op."""

    source: str
    id: str
    data: pa.Table

    def __post_init__(self) -> None:
        _ident("source", self.source)
        if not self.id:
            raise DeclarationError(f"batch of source {self.source}: empty batch id")


@dataclass(frozen=True)
class SilverTable:
    """A trusted entity table built from one bronze source under a data contract.

    `transform` renames and selects raw (string) columns, one row out per row in;
    the platform then types each column to the contract's dtype, validates, drops
    duplicate keys and checks references; every rejected row goes to quarantine.
    `references` maps a column to `silver.table.column`.
    """

    name: str
    source: str
    transform: Callable[[pl.DataFrame], pl.DataFrame]
    contract: type[pa_pl.DataFrameModel]
    key: tuple[str, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _ident("silver table", self.name)
        _ident("source", self.source)
        columns = set(self.columns)
        for column in (*self.key, *self.references):
            if column not in columns:
                msg = f"silver.{self.name}: column {column!r} is not in the contract"
                raise DeclarationError(msg)
        for column, target in self.references.items():
            if target.count(".") != 2 or not target.startswith("silver."):  # noqa: PLR2004
                msg = (
                    f"silver.{self.name}: reference of {column!r} is {target!r}, "
                    "expected 'silver.table.column'"
                )
                raise DeclarationError(msg)

    @property
    def columns(self) -> dict[str, pl.DataType]:
        """Contract column names and their polars dtypes, in contract order."""
        schema = self.contract.to_schema()
        return {name: col.dtype.type for name, col in schema.columns.items()}

    @property
    def optional_columns(self) -> set[str]:
        """Contract columns a source may leave out (declared `Optional`)."""
        schema = self.contract.to_schema()
        return {name for name, col in schema.columns.items() if not col.required}


@dataclass(frozen=True)
class Feature:
    """One feature: its name, the value served when it is unknown, what it means."""

    name: str
    default: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        _ident("feature", self.name)


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity computed by DuckDB SQL over silver tables.

    The query reads tables by name (`FROM silver.transactions`) and returns the
    entity column, `event_time` and every feature. A value older than `ttl` at a
    label's time is not used (NULL and flagged). Rows with the same entity and
    event time in one build are collapsed to one (the largest feature values win,
    compared in feature order); across builds the latest written row wins.
    """

    name: str
    entity: str
    features: tuple[Feature, ...]
    query: str
    inputs: tuple[str, ...]
    ttl: timedelta

    def __post_init__(self) -> None:
        _ident("feature view", self.name)
        _ident(f"entity of view {self.name}", self.entity)
        names = [f.name for f in self.features]
        if not names or len(set(names)) != len(names):
            msg = f"feature view {self.name}: features must be non-empty and unique"
            raise DeclarationError(msg)
        if self.ttl <= timedelta(0):
            raise DeclarationError(f"feature view {self.name}: ttl must be positive")
        for table in self.inputs:
            if not table.startswith("silver."):
                msg = f"feature view {self.name}: input {table!r} is not a silver table"
                raise DeclarationError(msg)

    @property
    def feature_names(self) -> list[str]:
        """Feature column names in declaration order."""
        return [f.name for f in self.features]


@dataclass(frozen=True)
class AggregationView:
    """Features of one entity declared as windowed aggregations over its events.

    `source` is the silver table of events (the use case's label table: a
    request is an event), `id` and `timestamp` its event id and time columns.
    One declaration is compiled to DuckDB SQL (gold: one row per event, and
    point-in-time training sets) and to an online state updated by every
    scored event (see `aistack.platform.aggregations`). A request older than
    the entity's latest event by more than `allowed_lateness` is answered from
    the events before it and flagged late.
    """

    name: str
    source: str
    entity: str
    id: str
    timestamp: str
    aggregations: tuple[Aggregation, ...]
    allowed_lateness: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        _ident("feature view", self.name)
        _ident(f"entity of view {self.name}", self.entity)
        if not self.source.startswith("silver."):
            msg = f"feature view {self.name}: source {self.source!r} is not silver"
            raise DeclarationError(msg)
        if not self.aggregations:
            raise DeclarationError(f"feature view {self.name}: no aggregations")
        names = [s.name for s in self.specs]
        for name in names:
            _ident(f"feature of view {self.name}", name)
        if len(set(names)) != len(names):
            msg = f"feature view {self.name}: feature names must be unique"
            raise DeclarationError(msg)
        if self.allowed_lateness < timedelta(0):
            msg = f"feature view {self.name}: allowed_lateness must be >= 0"
            raise DeclarationError(msg)

    @property
    def specs(self) -> list[Spec]:
        """Compiled features (one per aggregation and window)."""
        return specs(self.aggregations)

    @property
    def features(self) -> tuple[Feature, ...]:
        """One feature per aggregation and window; unknown (NULL) is served as 0."""
        return tuple(
            Feature(a.feature_name(w), 0.0 if a.fill is None else a.fill, a.description)
            for a in self.aggregations
            for w in a.windows
        )

    @property
    def feature_names(self) -> list[str]:
        """Feature column names in declaration order."""
        return [s.name for s in self.specs]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Tables the view reads."""
        return (self.source,)

    @property
    def value_columns(self) -> list[str]:
        """Event columns the online state keeps (aggregated or filtered)."""
        columns: dict[str, None] = {}
        for a in self.aggregations:
            if a.column is not None:
                columns[a.column] = None
            if a.where is not None:
                columns[a.where.column] = None
        return list(columns)

    @property
    def span(self) -> timedelta:
        """Longest shift + window: how far back an event's features look."""
        return max(a.shift + max(a.windows) for a in self.aggregations)

    @property
    def retention(self) -> timedelta:
        """How long the online state keeps an event behind the entity's latest."""
        return self.span + self.allowed_lateness

    @property
    def ttl(self) -> timedelta:
        """Aggregations are computed at each event: never stale within the span."""
        return self.span


View = FeatureView | AggregationView


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


@dataclass(frozen=True)
class Serving:
    """What the online API accepts and decides.

    `request` is the pydantic model of one payload: it must have the label
    columns and timestamp (the id is optional: a request id is used when absent).
    A score at or above `threshold` is a positive decision.
    """

    request: type[BaseModel]
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise DeclarationError("serving: threshold must be within [0, 1]")


Signal = Literal["drift_share", "performance_drop", "error_rate", "latency_p99_ms"]


@dataclass(frozen=True)
class AlertRule:
    """Fire when `signal` exceeds `threshold`; once per episode, not per request.

    Signals: `drift_share` (share of drifted features), `performance_drop` (the
    primary metric at training minus its live value), `error_rate` (share of
    5xx answers) and `latency_p99_ms`.
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
    """

    max_error_rate: float = 0.01
    max_latency_p99_ms: float = 50.0
    max_score_psi: float = 0.25
    max_performance_drop: float = 0.05
    min_requests: int = 100
    promote_after: int = 1000


@dataclass(frozen=True)
class BusinessMetric:
    """The outcome an A/B test compares between arms.

    `outcome(frame)` maps logged predictions joined with their labels (columns
    of the payload, `score`, `decision`, `label`) to one value per row, NaN where
    a row does not count. `kind` picks the test: two-proportion z-test or a
    bootstrap of the mean difference.
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


@dataclass(frozen=True)
class UseCase:
    """Everything the platform needs to run one use case end to end.

    `read_sources(params, seed)` yields raw batches; `params` is the pydantic model
    of the run options it accepts (e.g. `--days 30` on the CLI).
    """

    name: str
    description: str
    params: type[BaseModel]
    read_sources: Callable[[Any, int], Iterable[Batch]]
    silver: tuple[SilverTable, ...]
    views: tuple[View, ...]
    labels: Labels
    trainers: tuple[Trainer, ...]
    metrics: Mapping[str, Metric]
    gates: Gates
    request_features: Mapping[str, pl.Expr] = field(default_factory=dict)
    split: Split = field(default_factory=Split)
    serving: Serving | None = None
    monitoring: Monitoring = field(default_factory=Monitoring)

    def __post_init__(self) -> None:  # noqa: PLR0912
        _ident("use case", self.name)
        silver = {f"silver.{s.name}" for s in self.silver}
        for view in self.views:
            for table in view.inputs:
                if table not in silver:
                    msg = f"{self.name}: view {view.name} reads undeclared {table}"
                    raise DeclarationError(msg)
        if self.labels.table not in silver:
            msg = f"{self.name}: labels table {self.labels.table} is not declared"
            raise DeclarationError(msg)
        if not self.trainers:
            raise DeclarationError(f"{self.name}: declare at least one trainer")
        names = self.feature_names
        if len(set(names)) != len(names):
            raise DeclarationError(f"{self.name}: feature names must be unique")
        gates = self.gates
        for metric in (gates.primary_metric, *gates.metric_floors):
            if metric not in self.metrics:
                msg = f"{self.name}: gate metric {metric!r} is not a declared metric"
                raise DeclarationError(msg)
        inputs = set(self.model_inputs)
        for column in (*gates.irrelevant_columns, *gates.monotonic):
            if column not in inputs:
                msg = f"{self.name}: gate column {column!r} is not a model input"
                raise DeclarationError(msg)
        for trainer in self.trainers:
            for column in trainer.inputs:
                if column not in inputs:
                    msg = (
                        f"{self.name}: trainer {trainer.name} reads unknown {column!r}"
                    )
                    raise DeclarationError(msg)
        if self.serving is not None:
            fields = set(self.serving.request.model_fields)
            needed = {*self.labels.columns, self.labels.timestamp}
            if not needed <= fields:
                missing = ", ".join(sorted(needed - fields))
                msg = f"{self.name}: serving request lacks label columns {missing}"
                raise DeclarationError(msg)
        for view in self.views:
            if isinstance(view, AggregationView):
                self._check_aggregation_view(view)
            if view.entity not in self.labels.columns:
                msg = (
                    f"{self.name}: entity {view.entity!r} of view {view.name} is not "
                    "among the label columns"
                )
                raise DeclarationError(msg)

    def _check_aggregation_view(self, view: AggregationView) -> None:
        labels = self.labels
        expected = (labels.table, labels.id, labels.timestamp)
        if (view.source, view.id, view.timestamp) != expected:
            msg = (
                f"{self.name}: view {view.name} aggregates "
                f"{view.source}({view.id}, {view.timestamp}); a request is an event "
                f"of {labels.table}({labels.id}, {labels.timestamp}), expected those"
            )
            raise DeclarationError(msg)
        known = {*labels.columns, labels.label}
        for a in view.aggregations:
            for column in (a.column, a.where.column if a.where else None):
                if column is not None and column not in known:
                    msg = (
                        f"{self.name}: view {view.name} aggregates {column!r}, which "
                        "is neither a request column nor the label"
                    )
                    raise DeclarationError(msg)
            uses_label = labels.label in (a.column, a.where.column if a.where else None)
            if uses_label and a.shift < labels.delay:
                msg = (
                    f"{self.name}: view {view.name}: {a.label} reads the label, "
                    f"known {labels.delay} after the event; shift {a.shift} is "
                    "shorter (it would use labels not known yet)"
                )
                raise DeclarationError(msg)

    @property
    def aggregation_views(self) -> list[AggregationView]:
        """Views computed per event (online state), in declaration order."""
        return [v for v in self.views if isinstance(v, AggregationView)]

    def gold_table(self, view: View) -> str:
        """Delta table name of a feature view."""
        return f"gold.{self.name}_{view.name}"

    @property
    def predictions_table(self) -> str:
        """Delta table name of batch predictions."""
        return f"gold.{self.name}_predictions"

    @property
    def feature_names(self) -> list[str]:
        """Request-time features, then each view's features, in declaration order."""
        names = list(self.request_features)
        for view in self.views:
            names.extend(view.feature_names)
        return names

    @property
    def feature_defaults(self) -> dict[str, float]:
        """Value used for a view feature that is unknown (no row inside the ttl)."""
        return {f.name: f.default for v in self.views for f in v.features}

    @property
    def model_inputs(self) -> list[str]:
        """Columns a model receives: the row id (never a feature) and the features."""
        return [self.labels.id, *self.feature_names]


def discover() -> dict[str, UseCase]:
    """Every use case registered under the `aistack.use_cases` entry-point group."""
    found: dict[str, UseCase] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        use_case = point.load()
        if not isinstance(use_case, UseCase):
            msg = (
                f"entry point {point.name} = {point.value} is a "
                f"{type(use_case).__name__}, expected an aistack UseCase"
            )
            raise DeclarationError(msg)
        found[use_case.name] = use_case
    return found


def get_use_case(name: str, registry: Mapping[str, UseCase] | None = None) -> UseCase:
    """The use case called `name`, with the known names in the error if absent."""
    known = discover() if registry is None else registry
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        msg = f"use case {name!r} is not registered (known: {listed})"
        raise UseCaseNotFoundError(msg)
    return known[name]
