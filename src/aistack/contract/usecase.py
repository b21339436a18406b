"""The use case: everything the platform needs to run one end to end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import polars as pl
from pydantic import BaseModel

from aistack.contract.features import AggregationView, View
from aistack.contract.model import (
    TASKS,
    Evaluation,
    Gates,
    Labels,
    Metric,
    Split,
    Task,
    Trainer,
)
from aistack.contract.monitoring import Monitoring
from aistack.contract.names import _ident
from aistack.contract.serving import Serving
from aistack.contract.tables import Batch, PostgresTable, SilverTable
from aistack.contract.tuning import Tuning
from aistack.errors import DeclarationError


@dataclass(frozen=True)
class UseCase:
    """Everything the platform needs to run one use case end to end.

    `read_sources(params, seed)` yields raw batches (or `PostgresTable` pulls);
    `params` is the pydantic model of the run options it accepts (e.g.
    `--days 30` on the CLI). `task` decides
    how model output is read, served and gated (see `Task`). Features come from
    `row_features` (label-table columns used as they are), `request_features`
    (polars expressions over the request columns) and `views`; a use case whose
    rows carry their own features declares no view and no entity.
    `evaluation` says how the test part is formed beyond the split (see
    `Evaluation`), `tuning` how `aistack tune` validates (see `Tuning`).
    """

    name: str
    description: str
    params: type[BaseModel]
    read_sources: Callable[[Any, int], Iterable[Batch | PostgresTable]]
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
    task: Task = "binary"
    row_features: tuple[str, ...] = ()
    evaluation: Evaluation = field(default_factory=Evaluation)
    tuning: Tuning = field(default_factory=Tuning)

    def __post_init__(self) -> None:  # noqa: PLR0912
        _ident("use case", self.name)
        self._check_task()
        self._check_clock()
        self._check_evaluation()
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
        tuned = (self.tuning.metric,) if self.tuning.metric else ()
        for metric in (gates.primary_metric, *gates.metric_floors, *tuned):
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
            clock = (self.labels.timestamp,) if self.labels.timestamp else ()
            needed = {*self.labels.columns, *clock}
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

    def _check_task(self) -> None:
        if self.task not in TASKS:
            msg = f"{self.name}: unknown task {self.task!r} (one of {', '.join(TASKS)})"
            raise DeclarationError(msg)
        if self.task == "ranking":
            msg = (
                f"{self.name}: the ranking task is declared with `RankingUseCase`"
                " (interactions, not labelled rows)"
            )
            raise DeclarationError(msg)
        serving = self.serving
        if self.task == "binary" and serving and not 0 <= serving.threshold <= 1:
            msg = f"{self.name}: a binary threshold must be within [0, 1]"
            raise DeclarationError(msg)
        if self.task == "multiclass" and self.gates.monotonic:
            msg = (
                f"{self.name}: monotonic gates need an ordered output; a "
                "multiclass model's class is not"
            )
            raise DeclarationError(msg)
        for trainer in self.trainers:
            if trainer.resampling is not None and self.task != "binary":
                msg = f"{self.name}: trainer {trainer.name}: resampling needs binary"
                raise DeclarationError(msg)
            if trainer.interval is None:
                continue
            if self.task != "regression":
                msg = f"{self.name}: trainer {trainer.name}: interval needs regression"
                raise DeclarationError(msg)
            if self.split.by_days or len(self.split.parts) != 3:  # noqa: PLR2004
                msg = (
                    f"{self.name}: trainer {trainer.name}: interval is calibrated "
                    "on the validation part; declare Split fractions (train, "
                    "validation, test)"
                )
                raise DeclarationError(msg)
        for column in self.row_features:
            _ident("row feature", column)
            if column not in self.labels.columns:
                msg = (
                    f"{self.name}: row feature {column!r} must be one of the label "
                    "columns (the columns a request carries)"
                )
                raise DeclarationError(msg)

    def _check_clock(self) -> None:
        """Rows without a timestamp cannot be split by time nor aggregated."""
        if self.labels.timestamp is not None:
            return
        if self.split.kind == "time":
            msg = (
                f"{self.name}: split kind 'time' needs labels.timestamp; rows "
                "without a clock split 'random', 'stratified' or 'group'"
            )
            raise DeclarationError(msg)
        if self.views:
            msg = (
                f"{self.name}: view {self.views[0].name} joins features as of each "
                "row's time and needs labels.timestamp"
            )
            raise DeclarationError(msg)

    def _check_evaluation(self) -> None:
        entity = self.evaluation.exclude_known_positives
        if entity is None:
            return
        if entity not in self.labels.columns:
            msg = (
                f"{self.name}: evaluation excludes known positives of {entity!r}, "
                "which is not among the label columns"
            )
            raise DeclarationError(msg)
        if not self.split.by_days or self.task != "binary":
            msg = (
                f"{self.name}: evaluation exclude_known_positives needs a binary "
                "task and a time split by days (Split(kind='time') without fractions)"
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

    @cached_property
    def request_expressions(self) -> dict[str, pl.Expr]:
        """Row features (as floats), then request-time feature expressions (one
        mapping per use case: compiled request plans are kept per mapping)."""
        rows = {c: pl.col(c).cast(pl.Float64) for c in self.row_features}
        return {**rows, **self.request_features}

    @property
    def feature_names(self) -> list[str]:
        """Row and request-time features, then each view's, in declaration order."""
        return list(self._feature_names)

    @cached_property
    def _feature_names(self) -> tuple[str, ...]:  # read per request: built once
        names = list(self.request_expressions)
        for view in self.views:
            names.extend(view.feature_names)
        return tuple(names)

    @property
    def feature_defaults(self) -> dict[str, float]:
        """Value used for a view feature that is unknown (no row inside the ttl)."""
        return dict(self._feature_defaults)

    @cached_property
    def _feature_defaults(self) -> tuple[tuple[str, float], ...]:
        return tuple((f.name, f.default) for v in self.views for f in v.features)

    @property
    def model_inputs(self) -> list[str]:
        """Columns a model receives: the row id (never a feature) and the features."""
        return [self.labels.id, *self.feature_names]
