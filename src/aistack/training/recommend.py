"""Train, evaluate, gate and register recommenders: the ranking task's training.

Each trainer is one MLflow run: its hyperparameters, RecBole-protocol metrics
on the validation and test splits (full ranking, items seen in training (and
validation, for test) excluded), gate results, the split and the lineage of
its input tables. The registered model is a `RankingModel`: the recommender
with the id mapping of its users and items and every known interaction, so
serving filters items a user already has and sends unknown users down the
cold-start path. A training key makes a re-run on the same inputs train nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from aistack.contract import RankingUseCase, Trainer
from aistack.errors import ConfigError
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.registry.artifacts import load_model
from aistack.sql import quote
from aistack.training.fit import (
    Candidate,
    as_challenger,
    code_fingerprint,
    log_verdict,
    promote_champion,
    requirements,
)
from aistack.training.gates import GateResult
from aistack.training.ranking import (
    Interactions,
    Recommender,
    evaluate_full_ranking,
    split_per_user,
    top_k,
)

LATENCY_CALLS = 30


class RankingModel(BaseEstimator):  # type: ignore[misc]
    """A fitted recommender with its id mapping and every known interaction."""

    def __init__(
        self,
        recommender: Any,  # noqa: ANN401  (any Recommender)
        users: np.ndarray,
        items: np.ndarray,
        seen: sp.csr_matrix,
    ) -> None:
        self.recommender = recommender
        self.users = users
        self.items = items
        self.seen = seen

    def _positions(self, axis: str) -> dict[Any, int]:
        """External id -> index along `users` or `items`, built once per model."""
        cache: dict[str, dict[Any, int]] = self.__dict__.setdefault("_index_of", {})
        if axis not in cache:
            cache[axis] = {
                v.item() if hasattr(v, "item") else v: i
                for i, v in enumerate(getattr(self, axis))
            }
        return cache[axis]

    def user_row(self, user: object) -> int | None:
        """The matrix row of a known user, None for a cold-start user."""
        return self._positions("users").get(user)

    def top_k_rows(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores of known users (seen items excluded)."""
        block = np.array(self.recommender.score(rows), dtype=np.float64)
        part = self.seen[rows].tocoo()
        block[part.row, part.col] = -np.inf
        top = top_k(block, k)
        return top, np.take_along_axis(block, top, axis=1)

    def top_k_session(
        self, item_ids: list[object], k: int
    ) -> tuple[np.ndarray, np.ndarray, list[object]]:
        """Top-k for an anonymous session of items (unknown ids are returned)."""
        index = self._positions("items")  # not rebuilt per request
        known = [index[i] for i in item_ids if i in index]
        unknown = [i for i in item_ids if i not in index]
        scores = np.array(
            self.recommender.score_items(np.asarray(known, dtype=np.int64)),
            dtype=np.float64,
        ).reshape(1, -1)
        scores[0, known] = -np.inf
        top = top_k(scores, k)
        return top[0], np.take_along_axis(scores, top, axis=1)[0], unknown


@dataclass
class RankingData:
    """Interactions split per user, sharing one index; the item table."""

    train: Interactions
    valid: Interactions
    test: Interactions
    every: Interactions
    items: pd.DataFrame | None
    lineage: dict[str, int]
    split: dict[str, object]


def load_ranking_data(lake: Lake, uc: RankingUseCase, *, seed: int) -> RankingData:
    """Interactions (and items) at their current versions, split per user.

    They come from the gold tables the use case names (`history`,
    `item_features`), else from silver; either way the rows are ordered by
    user, time and item before the split, so the same ratings give the same
    split. The tables read, at their versions, are the lineage.
    """
    tables = [uc.interactions_table, *([uc.items_table] if uc.items_table else [])]
    lineage = lake.versions(tables)
    missing = [t for t in tables if t not in lineage]
    if missing:
        msg = f"{uc.name}: {', '.join(missing)} does not exist yet (run the gold stage)"
        raise ConfigError(msg)
    con = lake.connect(lineage)
    columns = [uc.user, uc.item, uc.timestamp, *([uc.weight] if uc.weight else [])]
    if uc.history:  # one row per user, the interaction columns as lists
        lists = columns[1:]
        select = ", ".join(
            [quote(uc.user), *(f"unnest({quote(c)}) AS {quote(c)}" for c in lists)]
        )
    else:
        select = ", ".join(quote(c) for c in columns)
    frame = con.sql(
        f"SELECT * FROM (SELECT {select} FROM {uc.interactions_table}) "
        f"ORDER BY {quote(uc.user)}, {quote(uc.timestamp)}, {quote(uc.item)}"
    ).df()
    items = con.sql(f"SELECT * FROM {uc.items_table}").df() if uc.items_table else None
    assert uc.split is not None
    used_seed = uc.split.seed if uc.split.seed is not None else seed
    parts = split_per_user(frame, uc.user, uc.fractions, seed=used_seed)
    users = np.sort(frame[uc.user].unique())
    catalogue = frame[uc.item] if items is None else items[uc.item]
    all_items = np.sort(pd.concat([catalogue, frame[uc.item]]).unique())
    built = [
        Interactions.from_frame(
            p, uc.user, uc.item, uc.weight, users=users, items=all_items
        )
        for p in (*parts, frame)
    ]
    if items is not None:  # in column order, as content models expect
        items = items.set_index(uc.item).reindex(all_items).reset_index()
    test = parts[-1]
    split = {
        **uc.split.record(),
        "seed": used_seed,
        "train_rows": len(parts[0]),
        "valid_rows": len(parts[1]) if len(parts) == 3 else 0,  # noqa: PLR2004
        "test_rows": len(test),
        "test_ids_sha256": hashlib.sha256(
            test[[uc.user, uc.item]].to_csv(index=False).encode()
        ).hexdigest()[:16],
    }
    valid = built[1] if len(parts) == 3 else built[-2]  # noqa: PLR2004
    return RankingData(built[0], valid, built[-2], built[-1], items, lineage, split)


def item_popularity(lake: Lake, uc: RankingUseCase) -> tuple[pd.Series, dict[str, int]]:
    """Interactions per interacted item id, and the table version read.

    The one source of item popularity outside training (the monitor, the
    server's rollout guards): the use case's gold popularity table, its
    declared count column, when it declares one; else counted in its
    interactions table. Items counting 0 are left out.
    """
    item = quote(uc.item)
    if uc.popularity_table is None:
        table = uc.interactions
        query = f"SELECT {item} AS item, count(*) AS n FROM {table} GROUP BY 1"
    else:
        table, column = uc.popularity_table
        query = (
            f"SELECT {item} AS item, {quote(column)} AS n FROM {table} "
            f"WHERE {quote(column)} > 0"
        )
    lineage = lake.versions([table])
    if table not in lineage:
        msg = f"{uc.name}: {table} does not exist yet (run the gold stage)"
        raise ConfigError(msg)
    counts = lake.connect(lineage).sql(query).to_df()
    series: pd.Series = counts.set_index("item")["n"].astype(np.float64)
    return series, lineage


def ranking_key(
    uc: RankingUseCase, trainer: Trainer, lineage: dict[str, int], seed: int
) -> str:
    """Identity of a training: same inputs, hyperparameters and code, same model."""
    model = trainer.build(seed)
    payload = {
        "use_case": uc.name,
        "trainer": trainer.name,
        "lineage": lineage,
        "seed": seed,
        "split": uc.split.record() if uc.split else None,
        "k": uc.k,
        "hyperparameters": {k: repr(v) for k, v in sorted(model.get_params().items())},
        "code": code_fingerprint(trainer),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _metrics(found: dict[str, float]) -> dict[str, float]:
    return {name.replace("@", "_at_"): value for name, value in found.items()}


def _fit(model: Recommender, data: RankingData) -> None:
    """Fit on train; a model whose `fit` takes `valid` (e.g. a blend) gets it."""
    if "valid" in inspect.signature(model.fit).parameters:
        model.fit(data.train, data.items, valid=data.valid)  # type: ignore[call-arg]
    else:
        model.fit(data.train, data.items)


def _median_ms(fn: Callable[[], object]) -> float:
    fn()
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        fn()
        timings.append((time.perf_counter() - start) * 1000)
    return float(np.median(timings))


def ranking_gates(
    uc: RankingUseCase,
    model: RankingModel,
    metrics: dict[str, float],
    champion: float | None,
) -> list[GateResult]:
    """Floors, usable output, single-user latency and "not worse than champion"."""
    gates = uc.gates
    results = []
    for name, floor in gates.metric_floors.items():
        value = metrics.get(name, float("nan"))
        results.append(
            GateResult(
                f"floor_{name}",
                bool(value >= floor),
                f"{name}={value:.4f}, floor {floor}",
            )
        )
    rows = np.arange(min(64, len(model.users)))
    block = np.asarray(model.recommender.score(rows), dtype=np.float64)
    shape_ok = block.shape == (len(rows), len(model.items))
    finite = bool(shape_ok and np.isfinite(block).all())
    varies = bool(finite and np.ptp(block) > 0)
    results.append(
        GateResult(
            "output_shape",
            shape_ok and finite and varies,
            f"scores {block.shape} for {len(rows)} users, "
            f"finite={finite}, varies={varies}",
        )
    )
    median = _median_ms(lambda: model.top_k_rows(np.array([0]), uc.k))
    results.append(
        GateResult(
            "latency",
            median <= gates.max_latency_ms,
            f"one user's top-{uc.k} median {median:.2f} ms, "
            f"ceiling {gates.max_latency_ms} ms",
        )
    )
    primary = gates.primary_metric
    value = metrics.get(primary, float("nan"))
    if champion is None:
        results.append(GateResult("not_worse_than_champion", True, "no champion yet"))
    else:
        ok = bool(value - champion >= -gates.champion_tolerance)
        results.append(
            GateResult(
                "not_worse_than_champion",
                ok,
                f"{primary}={value:.4f} vs champion {champion:.4f} on the same split",
            )
        )
    return results


def champion_ranking_metric(
    registry: Registry, uc: RankingUseCase, data: RankingData
) -> float | None:
    """The champion's primary metric on this test split, None without one."""
    if registry.version_of(uc.name, "champion") is None:
        return None
    champion: RankingModel = load_model(registry, uc.name, "champion")
    if champion.recommender is None or len(champion.items) != data.train.n_items:
        return None  # another catalogue: not comparable
    found = evaluate_full_ranking(
        champion.recommender, data.train, data.test, uc.k, exclude=(data.valid,)
    )
    return _metrics(found)[uc.gates.primary_metric]


def train_recommender(
    uc: RankingUseCase,
    trainer: Trainer,
    data: RankingData,
    *,
    registry: Registry,
    experiment: str,
    champion: float | None,
    seed: int,
    actor: str,
) -> Candidate:
    """Fit, evaluate, gate, log and register one recommender; make it challenger."""
    recommender: Recommender = trainer.build(seed)
    start = time.perf_counter()
    _fit(recommender, data)
    train_seconds = time.perf_counter() - start
    valid = _metrics(evaluate_full_ranking(recommender, data.train, data.valid, uc.k))
    metrics = _metrics(
        evaluate_full_ranking(
            recommender, data.train, data.test, uc.k, exclude=(data.valid,)
        )
    )
    model = RankingModel(
        recommender, data.every.users, data.every.items, data.every.matrix
    )
    gates = ranking_gates(uc, model, metrics, champion)
    with mlflow.start_run(experiment_id=experiment, run_name=trainer.name) as run:
        params = {f"model.{k}": v for k, v in recommender.get_params().items()}
        mlflow.log_params(
            {
                "trainer": trainer.name,
                "model": type(recommender).__name__,
                "task": "ranking",
                "k": uc.k,
                "users": data.train.n_users,
                "items": data.train.n_items,
                **{f"split.{k}": v for k, v in data.split.items()},
                **{k: str(v)[:250] for k, v in list(params.items())[:60]},
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_metrics({f"valid.{k}": v for k, v in valid.items()})
        mlflow.log_metric("train_seconds", train_seconds)
        log_verdict(
            uc.name,
            ranking_key(uc, trainer, data.lineage, seed),
            gates,
            lineage=data.lineage,
            split=data.split,
        )
        with contextlib.redirect_stderr(io.StringIO()):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="cloudpickle",
                pip_requirements=requirements(trainer, recommender),
                registered_model_name=uc.name,
            )
    return as_challenger(
        uc.name, info, run, trainer, registry, actor=actor, metrics=metrics, gates=gates
    )


def choose_ranking_champion(
    uc: RankingUseCase, candidates: list[Candidate], *, registry: Registry, actor: str
) -> Candidate | None:
    """Promote the passing candidate with the best primary metric (greater: better)."""
    passing = [c for c in candidates if c.passed]
    if not passing:
        return None
    primary = uc.gates.primary_metric
    best = max(passing, key=lambda c: c.metrics[primary])
    return promote_champion(uc.name, best, primary, registry=registry, actor=actor)


def recommendations_frame(
    model: RankingModel, k: int, *, user: str, item: str
) -> pd.DataFrame:
    """Every known user's top-k (seen items excluded): user, rank, item, score."""
    rows = np.arange(len(model.users))
    parts = []
    for start in range(0, len(rows), 1024):
        block = rows[start : start + 1024]
        top, scores = model.top_k_rows(block, k)
        parts.append(
            pd.DataFrame(
                {
                    user: np.repeat(model.users[block], top.shape[1]),
                    "rank": np.tile(np.arange(1, top.shape[1] + 1), len(block)),
                    item: model.items[top.ravel()],
                    "score": scores.ravel(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
