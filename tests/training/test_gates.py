"""Gates on plain scorers: each check refuses what it should, with a reason."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from aistack.contract import Gates, lower_is_better
from aistack.contract.model import gain
from aistack.training.fit import Candidate, best_candidate
from aistack.training.gates import check_gates
from cancer_usecase import cancer_use_case

GATES = Gates(
    primary_metric="auc",
    metric_floors={"auc": 0.7},
    irrelevant_columns=("row_id",),
    monotonic={"x": "increasing"},
    max_latency_ms=50,
)
FRAME = pd.DataFrame({"row_id": np.arange(500), "x": np.linspace(0, 1, 500)})


class Scores:
    def __init__(self, fn) -> None:
        self.fn = fn

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.fn(frame), dtype=float)


def verdicts(model, metrics=None, champion=None) -> dict[str, bool]:
    results = check_gates(
        model, FRAME, metrics or {"auc": 0.9}, GATES, champion_metric=champion, seed=0
    )
    return {r.name: r.passed for r in results}


def test_a_good_model_passes_everything() -> None:
    assert all(verdicts(Scores(lambda f: f["x"])).values())


def test_each_failure_is_caught() -> None:
    assert not verdicts(Scores(lambda f: f["x"]), {"auc": 0.6})["floor_auc"]
    assert not verdicts(Scores(lambda f: np.full(len(f), 0.3)))["output_shape"]
    assert not verdicts(Scores(lambda f: f["x"] * 3))["score_range"]
    assert not verdicts(Scores(lambda f: f["x"][:1]))["output_shape"]
    assert not verdicts(Scores(lambda f: (f["row_id"] % 7) / 7 + 0 * f["x"]))[
        "invariant_row_id"
    ]
    assert not verdicts(Scores(lambda f: 1 - f["x"]))["monotonic_x"]
    assert not verdicts(Scores(lambda f: f["x"]), champion=0.95)[
        "not_worse_than_champion"
    ]


def test_a_raising_model_fails_without_crashing_the_run() -> None:
    def boom(frame):
        raise RuntimeError("no")

    results = verdicts(Scores(boom))
    assert results["output_shape"] is False
    assert results["behaviour"] is False


def test_latency_ceiling() -> None:
    def slow(frame):
        time.sleep(0.06)
        return frame["x"]

    assert not verdicts(Scores(slow))["latency"]


def test_a_lower_is_better_metric_is_judged_by_its_direction() -> None:
    gates = Gates(primary_metric="rmse", metric_floors={"rmse": 3.0})
    loss = {"rmse": False}

    def judged(rmse: float, champion: float | None) -> dict[str, bool]:
        results = check_gates(
            Scores(lambda f: f["x"]),
            FRAME,
            {"rmse": rmse},
            gates,
            champion_metric=champion,
            seed=0,
            directions=loss,
        )
        return {r.name: r.passed for r in results}

    assert judged(2.0, champion=2.5)["floor_rmse"]  # under the ceiling
    assert not judged(4.0, champion=None)["floor_rmse"]  # above it
    assert judged(2.0, champion=2.5)["not_worse_than_champion"]  # lower: better
    assert not judged(3.0, champion=2.5)["not_worse_than_champion"]


def test_the_champion_is_the_lowest_loss_and_drops_are_signed() -> None:

    base = cancer_use_case()
    rmse = lower_is_better(
        lambda f: float(((f["label"] - f["score"]) ** 2).mean() ** 0.5)
    )
    uc = replace(
        base,
        metrics={**base.metrics, "rmse": rmse},
        gates=replace(base.gates, primary_metric="rmse", metric_floors={}),
    )
    worse = Candidate("a", "r1", 1, {"rmse": 0.9})
    better = Candidate("b", "r2", 2, {"rmse": 0.3})
    assert best_candidate(uc, [worse, better]) is better
    assert gain(rmse, 0.3, 0.9) == pytest.approx(0.6)  # lower loss: a gain
    assert gain(uc.metrics["roc_auc"], 0.7, 0.9) == pytest.approx(-0.2)
