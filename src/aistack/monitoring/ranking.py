"""A/B of two recommenders on simulated clicks: the canary's routing, a click
model from held-out ratings, and the platform's two-proportion test.

Each test user (one with held-out ratings) is routed as the canary routes live
traffic (`routes_to_challenger`, sticky per user) and shown its arm's top-K over
the items it had not rated by the end of the validation split. A shown item is
clicked with probability `rating / 5 x click_scale` when the user rated it in
the held-out (test) split, and `noise` otherwise: the user's later ratings are
the clicks it would have made. Click-through rate (clicks per shown item) is
compared with `aistack.monitoring.abtest.compare`, as any declared business
metric is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aistack.contract import RankingUseCase
from aistack.errors import ConfigError
from aistack.monitoring.abtest import ABResult, compare
from aistack.registry.artifacts import load_model
from aistack.registry.rollout import read_rollout, routes_to_challenger
from aistack.training.ranking import top_k
from aistack.training.recommend import RankingModel, load_ranking_data
from aistack.training.tracking import tracking
from aistack.workspace import Workspace


@dataclass(frozen=True)
class ClickModel:
    """P(click) of a shown item: held-out rating / 5 x `scale`, else `noise`."""

    scale: float = 0.6
    noise: float = 0.01
    max_rating: float = 5.0


def ranking_ab_test(
    ws: Workspace,
    uc: RankingUseCase,
    *,
    clicks: ClickModel | None = None,
    minimum_detectable_effect: float = 0.01,
    seed: int = 0,
) -> ABResult:
    """Champion (A) vs the canary challenger (B): click-through rate of top-K."""
    clicks = clicks or ClickModel()
    with tracking(ws.settings.mlflow_uri):
        rollout = read_rollout(ws.registry, uc.name)
        champion = ws.registry.version_of(uc.name, "champion")
        if rollout is None or not rollout.active or rollout.mode != "canary":
            msg = f"{uc.name}: no active canary rollout (aistack rollout --canary N)"
            raise ConfigError(msg)
        if champion is None:
            raise ConfigError(f"{uc.name}: no champion")
        models: dict[str, RankingModel] = {
            arm: load_model(ws.registry, uc.name, version)
            for arm, version in (("A", champion), ("B", rollout.version))
        }
    data = load_ranking_data(ws.lake, uc, seed=ws.settings.seed)
    held_out = data.test.matrix
    if uc.weight is None:  # ratings are the click propensity when declared
        propensity = (held_out > 0).astype(np.float64) * clicks.max_rating
    else:
        propensity = held_out.astype(np.float64)
    users = np.flatnonzero(np.diff(held_out.indptr))
    routed_b = np.array(
        [routes_to_challenger(rollout, data.train.users[u].item()) for u in users],
        dtype=bool,
    )
    rng = np.random.default_rng(seed)
    outcomes: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    for arm, rows in (("A", users[~routed_b]), ("B", users[routed_b])):
        if not len(rows):
            continue
        scores = np.array(models[arm].recommender.score(rows), dtype=np.float64)
        for seen in (data.train.matrix, data.valid.matrix):
            part = seen[rows].tocoo()
            scores[part.row, part.col] = -np.inf
        shown = top_k(scores, uc.k)
        rating = np.take_along_axis(propensity[rows].toarray(), shown, axis=1)
        p = np.where(
            rating > 0, rating / clicks.max_rating * clicks.scale, clicks.noise
        )
        outcomes[arm].append((rng.random(p.shape) < p).astype(np.float64).ravel())
    a, b = (np.concatenate(outcomes[x] or [np.empty(0)]) for x in ("A", "B"))
    return compare(
        f"click-through rate of top-{uc.k}",
        "proportion",
        a,
        b,
        effect=minimum_detectable_effect,
    )
