"""What a use case declares: sources, tables, features, model, serving, monitoring.

A use case is a package exposing one `UseCase` through the entry-point group
`aistack.use_cases`; declarations check themselves when built. The platform
reads them and executes; it never imports a use case by name.
"""

from __future__ import annotations

from aistack.contract.aggregations import (
    FUNCTIONS,
    Aggregation,
    Function,
    Op,
    Scalar,
    Spec,
    Value,
    Where,
    specs,
    window_label,
)
from aistack.contract.discovery import (
    ENTRY_POINT_GROUP,
    AnyUseCase,
    discover,
    get_any_use_case,
    get_use_case,
)
from aistack.contract.drift import DriftSettings
from aistack.contract.features import AggregationView, Feature, FeatureView, View
from aistack.contract.model import (
    DirectedMetric,
    Evaluation,
    Gates,
    Labels,
    Metric,
    Resampling,
    Split,
    Task,
    Trainer,
    lower_is_better,
)
from aistack.contract.monitoring import (
    AlertRule,
    BusinessMetric,
    Monitoring,
    RolloutGuards,
    Signal,
)
from aistack.contract.ranking import RankingGates, RankingUseCase
from aistack.contract.serving import Serving
from aistack.contract.tables import (
    PII_MODES,
    Batch,
    GoldTable,
    Pii,
    PiiCodec,
    PostgresTable,
    SilverTable,
)
from aistack.contract.tuning import Choice, Distribution, FloatRange, IntRange, Tuning
from aistack.contract.usecase import UseCase

__all__ = [
    "ENTRY_POINT_GROUP",
    "FUNCTIONS",
    "PII_MODES",
    "Aggregation",
    "AggregationView",
    "AlertRule",
    "AnyUseCase",
    "Batch",
    "BusinessMetric",
    "Choice",
    "DirectedMetric",
    "Distribution",
    "DriftSettings",
    "Evaluation",
    "Feature",
    "FeatureView",
    "FloatRange",
    "Function",
    "Gates",
    "GoldTable",
    "IntRange",
    "Labels",
    "Metric",
    "Monitoring",
    "Op",
    "Pii",
    "PiiCodec",
    "PostgresTable",
    "RankingGates",
    "RankingUseCase",
    "Resampling",
    "RolloutGuards",
    "Scalar",
    "Serving",
    "Signal",
    "SilverTable",
    "Spec",
    "Split",
    "Task",
    "Trainer",
    "Tuning",
    "UseCase",
    "Value",
    "View",
    "Where",
    "discover",
    "get_any_use_case",
    "get_use_case",
    "lower_is_better",
    "specs",
    "window_label",
]
