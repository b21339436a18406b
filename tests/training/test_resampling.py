"""Resampling, declared on a trainer: the training part only is rebalanced;
validation and test rows keep the balance the model will meet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from aistack.contract import Resampling, Trainer
from aistack.errors import DeclarationError
from aistack.registry.artifacts import load_model
from aistack.runner import run
from aistack.training.sets import resampled
from aistack.training.tracking import tracking
from cancer_usecase import cancer_use_case
from conftest import make_workspace
from task_usecases import wine

FRAME = pd.DataFrame({"x": np.arange(1000), "y": (np.arange(1000) % 20 == 0) * 1})


def test_undersampling_keeps_every_positive_and_ratio_times_as_many_negatives() -> None:
    out = resampled(FRAME, Resampling("undersample", ratio=2.0), label="y", seed=1)
    assert (out["y"] == 1).sum() == 50 and (out["y"] == 0).sum() == 100
    assert set(out["x"][out["y"] == 1]) == set(FRAME["x"][FRAME["y"] == 1])
    assert out["x"].is_unique and out["x"].is_monotonic_increasing  # rows kept
    again = resampled(FRAME, Resampling("undersample", ratio=2.0), label="y", seed=1)
    other = resampled(FRAME, Resampling("undersample", ratio=2.0), label="y", seed=2)
    assert out.equals(again) and not out.equals(other)  # seeded


def test_oversampling_draws_positives_up_to_the_ratio() -> None:
    out = resampled(FRAME, Resampling("oversample", ratio=1.0), label="y", seed=1)
    assert (out["y"] == 0).sum() == 950 and (out["y"] == 1).sum() == 950
    assert set(out["x"]) == set(FRAME["x"])  # every original row is kept


def test_bad_resampling_declarations_say_what_is_wrong() -> None:
    with pytest.raises(DeclarationError, match="unknown kind 'smote'"):
        Resampling("smote")  # type: ignore[arg-type]
    with pytest.raises(DeclarationError, match="ratio must be > 0"):
        Resampling("undersample", ratio=0)
    under = Trainer("t", LogisticRegression, resampling=Resampling("undersample"))
    with pytest.raises(DeclarationError, match="resampling needs binary"):
        dataclasses.replace(wine, trainers=(under,))


class CountingLogistic(LogisticRegression):
    """A logistic regression that remembers the rows it was fitted on."""

    def fit(self, x, y, sample_weight=None):
        self.fitted_rows_ = len(y)
        self.fitted_positives_ = int(np.sum(y == 1))
        return super().fit(x, y, sample_weight)


def test_a_run_undersamples_the_training_part_only(tmp_path: Path) -> None:
    uc = cancer_use_case(
        extra_trainers=(
            Trainer(
                "under",
                lambda seed: CountingLogistic(max_iter=1000),
                resampling=Resampling("undersample", ratio=1.0),
            ),
        )
    )
    ws = make_workspace(tmp_path / "ws")
    report = run(uc, ws, uc.params(), stages=("ingest", "silver", "gold", "train"))
    plain = next(c for c in report.candidates if c.trainer == "logistic")
    under = next(c for c in report.candidates if c.trainer == "under")
    with tracking(ws.settings.mlflow_uri):
        params = mlflow.get_run(under.run_id).data.params
        model = load_model(ws.registry, uc.name, under.version).estimator
    train_rows = int(params["train_rows"])
    positives = int(params["resampling.train_positives"])
    assert model.fitted_positives_ == positives  # what the model saw
    assert model.fitted_rows_ == 2 * positives < train_rows
    assert int(params["resampling.train_rows"]) == model.fitted_rows_
    # the test part is the same rows for both, with the natural class balance
    assert plain.test_scores is not None and under.test_scores is not None
    test_ids = plain.test_scores["exam_id"].tolist()
    assert under.test_scores["exam_id"].tolist() == test_ids
    assert under.test_scores["label"].mean() < 0.45
    assert under.metrics["roc_auc"] > 0.9
