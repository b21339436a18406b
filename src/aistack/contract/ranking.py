"""A ranking (recommendation) use case: interactions in, top-K items out.

Its rows are interactions (user, item, optional weight and time) rather than
labelled rows with features, so it has its own declaration; it shares the
sources, silver tables (contracts, quarantine), trainers, split, registry and
serving with every other use case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from aistack.contract.model import Split, Trainer
from aistack.contract.monitoring import RANKING_SIGNALS, AlertRule, RolloutGuards
from aistack.contract.names import _ident
from aistack.contract.tables import Batch, GoldTable, SilverTable
from aistack.errors import DeclarationError

RANKING_METRICS = ("ndcg", "recall", "hit", "mrr", "precision", "itemcoverage")
"""Metrics of a ranking evaluation, each at the use case's K (`ndcg_at_10`)."""


@dataclass(frozen=True)
class RankingGates:
    """What a recommender must pass to become champion.

    `metric_floors` on the test split (e.g. {"ndcg_at_10": 0.3});
    `max_latency_ms`: median time to rank every item for one user; a challenger
    must score at least the champion's `primary_metric` on the same split, less
    `champion_tolerance`.
    """

    primary_metric: str = "ndcg_at_10"
    metric_floors: Mapping[str, float] = field(default_factory=dict)
    max_latency_ms: float = 20.0
    champion_tolerance: float = 0.0


@dataclass(frozen=True)
class RankingUseCase:
    """Recommend items to users from their interactions.

    `interactions` is a silver table with `user`, `item`, `timestamp` and an
    optional `weight`; `items` an optional silver table of item attributes
    (keyed by the same `item` column) that content models read. A trainer's
    `build(seed)` returns a recommender (`aistack.training.ranking.Recommender`:
    fit / score / score_items). The default split is RecBole's: each user's
    interactions in random order, cut 8:1:1. `gold` tables are derived from
    silver before training (`gold_table_name` names them). Three of them may
    stand in for silver, named by their short names: `history` (one row per
    `user`, the `item`, `timestamp` and `weight` columns as lists) is what
    training splits and fits on; `item_features` (one row per `item`) is the
    item frame models get; `popularity` (a gold table and its count column,
    one row per `item`) is what the monitor compares shown items by. `alerts`
    are checked by `aistack monitor` on the served answers (signals
    `popularity_psi`, `coverage_drop`); `guards` judge a canary in the server,
    its "scores" being the popularity of the items each arm shows.
    """

    name: str
    description: str
    params: type[BaseModel]
    read_sources: Callable[[Any, int], Iterable[Batch]]
    silver: tuple[SilverTable, ...]
    interactions: str
    user: str
    item: str
    timestamp: str
    trainers: tuple[Trainer, ...]
    gates: RankingGates = field(default_factory=RankingGates)
    weight: str | None = None
    items: str | None = None
    split: Split | None = None
    k: int = 10
    task: str = "ranking"
    gold: tuple[GoldTable, ...] = ()
    history: str | None = None
    item_features: str | None = None
    popularity: tuple[str, str] | None = None
    alerts: tuple[AlertRule, ...] = ()
    guards: RolloutGuards = field(default_factory=RolloutGuards)

    def __post_init__(self) -> None:
        _ident("use case", self.name)
        silver = {f"silver.{s.name}": s for s in self.silver}
        for table in (self.interactions, self.items):
            if table is not None and table not in silver:
                msg = f"{self.name}: {table} is not a declared silver table"
                raise DeclarationError(msg)
        columns = set(silver[self.interactions].columns)
        for column in (self.user, self.item, self.timestamp, self.weight):
            if column is not None and column not in columns:
                msg = f"{self.name}: {self.interactions} has no column {column!r}"
                raise DeclarationError(msg)
        if self.items is not None and self.item not in silver[self.items].columns:
            msg = f"{self.name}: {self.items} has no item column {self.item!r}"
            raise DeclarationError(msg)
        if not self.trainers:
            raise DeclarationError(f"{self.name}: declare at least one trainer")
        if not 1 <= self.k <= 1000:  # noqa: PLR2004
            raise DeclarationError(f"{self.name}: k must be within [1, 1000]")
        known = set(self.metric_names)
        for metric in (self.gates.primary_metric, *self.gates.metric_floors):
            if metric not in known:
                msg = (
                    f"{self.name}: gate metric {metric!r} is not one of "
                    f"{', '.join(sorted(known))}"
                )
                raise DeclarationError(msg)
        self._check_gold(set(silver))
        self._check_gold_roles()
        self._check_alerts()
        if self.split is None:
            split = Split(kind="group", group=self.user, fractions=(0.8, 0.1, 0.1))
            object.__setattr__(self, "split", split)
        elif self.split.kind != "group" or self.split.group != self.user:
            msg = (
                f"{self.name}: a ranking split is per user (kind 'group', {self.user})"
            )
            raise DeclarationError(msg)

    def _check_gold(self, silver: set[str]) -> None:
        """Gold tables read declared silver tables and have distinct names."""
        names = [g.name for g in self.gold]
        if len(set(names)) != len(names):
            raise DeclarationError(f"{self.name}: gold table names repeat: {names}")
        for gold in self.gold:
            undeclared = sorted(set(gold.inputs.values()) - silver)
            if undeclared:
                msg = f"{self.name}: gold {gold.name} reads undeclared {undeclared}"
                raise DeclarationError(msg)

    def _check_gold_roles(self) -> None:
        """`history`, `item_features`, `popularity` name gold tables with the
        right key; the history reads the interactions it stands in for."""
        declared = {g.name: g for g in self.gold}
        popularity = self.popularity[0] if self.popularity else None
        for role, name, key in (
            ("history", self.history, self.user),
            ("item_features", self.item_features, self.item),
            ("popularity", popularity, self.item),
        ):
            if name is None:
                continue
            if name not in declared:
                msg = (
                    f"{self.name}: {role} {name!r} is not a declared gold table "
                    f"(declared: {', '.join(declared) or 'none'})"
                )
                raise DeclarationError(msg)
            if declared[name].key != (key,):
                msg = (
                    f"{self.name}: {role} {name!r} is keyed by "
                    f"{declared[name].key}, expected ({key!r},)"
                )
                raise DeclarationError(msg)
        history = declared[self.history] if self.history else None
        if history and self.interactions not in history.inputs.values():
            msg = (
                f"{self.name}: history {self.history!r} does not read "
                f"{self.interactions}, the interactions it stands in for"
            )
            raise DeclarationError(msg)

    def _check_alerts(self) -> None:
        """Alert rules watch signals a ranking monitor observes."""
        for rule in self.alerts:
            if rule.signal not in RANKING_SIGNALS:
                msg = (
                    f"{self.name}: alert {rule.name} watches {rule.signal!r}, "
                    f"expected one of {', '.join(RANKING_SIGNALS)}"
                )
                raise DeclarationError(msg)

    @property
    def metric_names(self) -> list[str]:
        """The evaluation's metric names at K, as logged."""
        return [f"{m}_at_{self.k}" for m in (*RANKING_METRICS, "novelty")]

    @property
    def fractions(self) -> tuple[float, ...]:
        """The per-user split fractions (train, valid, test)."""
        assert self.split is not None
        return self.split.parts

    def gold_table_name(self, gold: GoldTable) -> str:
        """Delta table name of a declared gold table."""
        return f"gold.{self.name}_{gold.name}"

    def _gold_named(self, name: str) -> str:
        return self.gold_table_name(next(g for g in self.gold if g.name == name))

    @property
    def interactions_table(self) -> str:
        """The table training reads interactions from: gold history, else silver."""
        return self._gold_named(self.history) if self.history else self.interactions

    @property
    def items_table(self) -> str | None:
        """The item frame's table: gold item features, else silver items, or None."""
        if self.item_features:
            return self._gold_named(self.item_features)
        return self.items

    @property
    def popularity_table(self) -> tuple[str, str] | None:
        """(gold table, count column) of item popularity, None if not declared."""
        if self.popularity is None:
            return None
        return self._gold_named(self.popularity[0]), self.popularity[1]

    @property
    def recommendations_table(self) -> str:
        """Delta table of batch recommendations (top-K per known user)."""
        return f"gold.{self.name}_top_k"

    @property
    def log_table(self) -> str:
        """Delta table of served recommendations (one row per answer)."""
        return f"ops.{self.name}_recommendation_log"
