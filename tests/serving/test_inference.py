"""Serving paths: each one chosen at load gives the estimator's own scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier, XGBRegressor

from aistack.serving.inference import load_predictor
from aistack.training.models import ScoringModel


def _fitted(estimator, task: str) -> tuple[ScoringModel, np.ndarray]:
    data = load_breast_cancer() if task == "binary" else load_diabetes()
    frame = pd.DataFrame(
        data.data, columns=[f"f{i}" for i in range(data.data.shape[1])]
    )
    model = ScoringModel(
        estimator, list(frame.columns), {}, supervised=True, task=task
    ).fit(frame, data.target)
    return model, frame.to_numpy()


@pytest.mark.parametrize(
    ("estimator", "task", "booster", "onnx"),
    [
        (
            XGBClassifier(n_estimators=40, max_depth=3, random_state=0),
            "binary",
            True,
            True,
        ),
        (
            LGBMClassifier(n_estimators=40, verbose=-1, random_state=0),
            "binary",
            True,
            True,
        ),
        (
            XGBRegressor(n_estimators=40, max_depth=3, random_state=0),
            "regression",
            True,
            False,
        ),
        (
            LGBMRegressor(n_estimators=40, verbose=-1, random_state=0),
            "regression",
            True,
            False,
        ),
        (LogisticRegression(max_iter=5000), "binary", False, True),
        (
            XGBClassifier(n_estimators=40, max_depth=3, missing=-1.0, random_state=0),
            "binary",
            True,
            False,  # ONNX knows no missing marker but NaN: disagrees, not used
        ),
    ],
    ids=[
        "xgb-binary",
        "lgbm-binary",
        "xgb-regression",
        "lgbm-regression",
        "logistic",
        "xgb-own-missing-marker",
    ],
)
def test_every_serving_path_gives_the_estimators_own_scores(
    estimator, task: str, booster: bool, onnx: bool
) -> None:
    model, rows = _fitted(estimator, task)
    predictor = load_predictor("m", 1, model, sample=rows[:256])
    # some cells at -1: a value for most models, "missing" for the one saying so
    rows = rows.copy()
    rows[np.random.default_rng(1).random(rows.shape) < 0.1] = -1.0
    expected = model.predict_matrix(rows)
    t = predictor.timings_us
    assert ("booster_1" in t) is booster
    assert ("onnx_1" in t) is onnx, predictor.onnx_error
    # one path for all sizes (a row scores the same alone or batched): the
    # fastest measured on 1,000 rows
    paths = {k.rsplit("_", 1)[0] for k in t}
    assert (
        predictor.single == predictor.batch == min(paths, key=lambda p: t[f"{p}_1000"])
    )
    for path in paths:
        predictor.single = predictor.batch = path
        np.testing.assert_allclose(predictor.score(rows), expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(
            predictor.score(rows[:1]), expected[:1], rtol=0, atol=1e-4
        )
