"""Regression intervals: a declared residual-quantile interval calibrated on
validation rows covers held-out values as declared; a model's own interval wins."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from aistack.contract import Split, Trainer
from aistack.errors import DeclarationError, SchemaError
from aistack.training.models import ScoringModel
from task_usecases import diabetes, wine

X, Y = load_diabetes(return_X_y=True)
FEATURES = [f"x{j}" for j in range(X.shape[1])]
FRAME = pd.DataFrame(X, columns=FEATURES)


def _model(estimator: object) -> ScoringModel:
    return ScoringModel(estimator, FEATURES, {}, supervised=True, task="regression")


def _coverage(model: ScoringModel, rows: np.ndarray) -> float:
    bounds = model.predict_interval(FRAME.iloc[rows])
    assert bounds is not None
    y = Y[rows]
    return float(((bounds[:, 0] <= y) & (y <= bounds[:, 1])).mean())


def test_residual_interval_covers_held_out_values_as_declared() -> None:
    coverages = []
    for seed in range(200):  # split conformal: E[coverage] in [0.9, 0.9 + 1/(n+1)]
        order = np.random.default_rng(seed).permutation(len(Y))
        train, valid, test = order[:265], order[265:353], order[353:]
        model = _model(Ridge(alpha=0.1)).fit(FRAME.iloc[train], Y[train])
        model.calibrate_interval(FRAME.iloc[valid], Y[valid], coverage=0.9)
        coverages.append(_coverage(model, test))
    mean = float(np.mean(coverages))
    # 200 repeats of 89 test rows: the mean's standard error is about 0.003
    assert 0.89 <= mean <= 0.92, mean
    assert model.interval_half_width_ > 0


def test_training_residuals_would_not_do() -> None:
    """Calibrating on the rows fitted on under-covers for a flexible model: the
    reason the validation part is used."""
    order = np.random.default_rng(0).permutation(len(Y))
    train, test = order[:353], order[353:]
    forest = HistGradientBoostingRegressor(max_iter=300, random_state=0)
    model = _model(forest).fit(FRAME.iloc[train], Y[train])
    model.calibrate_interval(FRAME.iloc[train], Y[train], coverage=0.9)
    assert _coverage(model, test) < 0.8


def test_a_models_own_interval_is_served_instead() -> None:
    class Quantiles:
        """Median, 5 % and 95 % quantile models: an interval of its own."""

        def fit(self, x: np.ndarray, y: np.ndarray) -> Quantiles:
            self.parts_ = [
                HistGradientBoostingRegressor(
                    loss="quantile", quantile=q, max_iter=50, random_state=0
                ).fit(x, y)
                for q in (0.5, 0.05, 0.95)
            ]
            return self

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.parts_[0].predict(x)

        def predict_interval(self, x: np.ndarray) -> np.ndarray:
            return np.column_stack([p.predict(x) for p in self.parts_[1:]])

    model = _model(Quantiles()).fit(FRAME, Y)
    bounds = model.predict_interval(FRAME)
    assert bounds is not None
    expected = model.estimator.predict_interval(FRAME.to_numpy())
    np.testing.assert_array_equal(bounds, expected)
    assert _model(Ridge()).fit(FRAME, Y).predict_interval(FRAME) is None


def test_too_few_validation_rows_for_the_coverage_is_an_error() -> None:
    model = _model(Ridge()).fit(FRAME, Y)
    with pytest.raises(SchemaError, match="5 validation rows cannot calibrate a 90%"):
        model.calibrate_interval(FRAME.iloc[:5], Y[:5], coverage=0.9)


def test_interval_declarations_say_what_is_wrong() -> None:
    with pytest.raises(DeclarationError, match=r"interval is a coverage in \(0, 1\)"):
        Trainer("ridge", lambda seed: Ridge(), interval=90)
    ridge = Trainer("ridge", lambda seed: Ridge(), interval=0.9)
    with pytest.raises(DeclarationError, match="calibrated on the validation part"):
        dataclasses.replace(diabetes, trainers=(ridge,), split=Split(kind="random"))
    with pytest.raises(DeclarationError, match="interval needs regression"):
        dataclasses.replace(wine, trainers=(ridge,))
