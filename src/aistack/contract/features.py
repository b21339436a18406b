"""Feature views: SQL views (batch-only) and aggregation views (real time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from aistack.contract.aggregations import Aggregation, Spec, specs
from aistack.contract.names import _ident
from aistack.errors import DeclarationError


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
    scored event (see `aistack.features.aggregations`). A request older than
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
        return list(self._specs)

    @cached_property
    def _specs(self) -> tuple[Spec, ...]:  # compiled once: read per request
        return tuple(specs(self.aggregations))

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
        return [s.name for s in self._specs]

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
