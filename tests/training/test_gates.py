"""Gates on plain scorers: each check refuses what it should, with a reason."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from aistack.contract import Gates
from aistack.training.gates import check_gates

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
