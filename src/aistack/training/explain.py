"""Per-prediction explanations: each feature's additive share of the model's margin.

Boosted trees (XGBoost, LightGBM) give exact TreeSHAP values; a linear model
(alone, or after per-column scalers in a Pipeline) gives `coef_j * z_j`, with
`z` the input the linear step reads and its intercept as the base value. A
linear model calibrated by `CalibratedClassifierCV(method="sigmoid",
ensemble=False)` has log-odds `a * margin + b` (one Platt sigmoid over the
refitted model's margin), so its contributions are the linear ones times `a`
and its base value `a * intercept + b`. For every row, `base +
contributions.sum() == margin`: the log-odds of a binary classifier, the
prediction of a regressor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from aistack.errors import SchemaError
from aistack.training.models import ScoringModel

Matrix = npt.NDArray[np.float64]
_TASKS = ("binary", "regression")
_PER_COLUMN = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer)
_LINEAR = (LogisticRegression, LinearRegression, Ridge)
_TOP = 5  # contributions listed per explained row
_TREES = ("XGBClassifier", "XGBRegressor", "LGBMClassifier", "LGBMRegressor")


def check_explainable(model: ScoringModel) -> None:
    """Raise SchemaError saying why `model` has no per-feature explanation."""
    task = getattr(model, "task", "binary")
    if task not in _TASKS:
        msg = f"explanations cover binary and regression models, not the {task} task"
        raise SchemaError(msg)
    estimator = model.estimator
    if type(estimator).__name__ in _TREES:
        return
    calibrated = _calibration(estimator)
    if calibrated is not None:
        estimator = calibrated[0]
    steps = list(getattr(estimator, "steps", [("model", estimator)]))
    *before, (_, final) = steps
    kinds = [type(step).__name__ for _, step in before]
    if not isinstance(final, _LINEAR):
        msg = (
            f"cannot explain model {type(final).__name__}: explanations cover "
            "XGBoost, LightGBM and linear models (LogisticRegression, "
            "LinearRegression, Ridge), optionally after per-column scalers"
        )
        raise SchemaError(msg)
    if not all(isinstance(step, _PER_COLUMN) for _, step in before):
        msg = (
            f"cannot explain a linear model after {', '.join(kinds)}: only "
            "per-column scalers keep one contribution per feature"
        )
        raise SchemaError(msg)
    if np.asarray(final.coef_).reshape(-1).size != len(model.features):
        msg = "cannot explain a multi-output linear model (one coefficient per feature)"
        raise SchemaError(msg)


def explain(model: ScoringModel, matrix: Matrix) -> tuple[Matrix, Matrix]:
    """Base value per row and contributions (rows x features) in margin space.

    `matrix` holds the model's `features` in order, defaults filled (as
    `ScoringModel.predict_matrix` takes it). Invariant, per row:
    `base + contributions.sum() == margin` (log-odds for binary, the prediction
    for regression). Raises SchemaError for a model it cannot explain.
    """
    check_explainable(model)
    estimator = model.estimator
    calibrated = _calibration(estimator)
    if calibrated is not None:
        inner, slope, offset = calibrated
        base, contributions = _linear_contributions(inner, matrix)
        return slope * base + offset, slope * contributions
    kind = type(estimator).__name__
    if kind.startswith("XGB"):
        full = _xgboost_contributions(estimator, matrix)
    elif kind.startswith("LGBM"):
        full = np.asarray(estimator.predict(matrix, pred_contrib=True), np.float64)
    else:
        return _linear_contributions(estimator, matrix)
    return full[:, -1].copy(), full[:, :-1].copy()


def _calibration(estimator: Any) -> tuple[Any, float, float] | None:  # noqa: ANN401
    """(fitted inner model, a, b) when `estimator` is a sigmoid-calibrated model,
    whose log-odds are `a * inner margin + b`; None when it is not calibrated."""
    if not isinstance(estimator, CalibratedClassifierCV):
        return None
    fitted = getattr(estimator, "calibrated_classifiers_", [])
    if estimator.method != "sigmoid" or len(fitted) != 1:
        msg = (
            f"cannot explain CalibratedClassifierCV(method={estimator.method!r}, "
            f"ensemble={estimator.ensemble!r}): only method='sigmoid' with "
            "ensemble=False keeps the log-odds an affine map (a * margin + b) of "
            "one model's margin"
        )
        raise SchemaError(msg)
    only = fitted[0]
    if not hasattr(only.estimator, "decision_function"):
        msg = (
            f"cannot explain a calibrated {type(only.estimator).__name__}: it has "
            "no margin (decision_function) to calibrate"
        )
        raise SchemaError(msg)
    sigmoid = only.calibrators[0]  # p = 1 / (1 + exp(a_ * margin + b_))
    return only.estimator, -float(sigmoid.a_), -float(sigmoid.b_)


def _xgboost_contributions(estimator: Any, matrix: Matrix) -> Matrix:  # noqa: ANN401
    """TreeSHAP values with the bias in the last column (XGBoost's layout)."""
    from xgboost import DMatrix  # noqa: PLC0415  (only for XGBoost models)

    booster = estimator.get_booster()
    try:  # early stopping: the sklearn wrapper predicts with the best trees only
        rounds = (0, int(estimator.best_iteration) + 1)
    except AttributeError:
        rounds = (0, 0)
    data = DMatrix(matrix, feature_names=booster.feature_names)
    out = booster.predict(data, pred_contribs=True, iteration_range=rounds)
    return np.asarray(out, dtype=np.float64)


def _linear_contributions(
    estimator: Any,  # noqa: ANN401  (a linear model or a Pipeline ending in one)
    matrix: Matrix,
) -> tuple[Matrix, Matrix]:
    """`coef_j * z_j` on the linear step's own input, the intercept as base."""
    steps = list(getattr(estimator, "steps", [("model", estimator)]))
    inputs = np.asarray(matrix, dtype=np.float64)
    for _, step in steps[:-1]:
        inputs = np.asarray(step.transform(inputs), dtype=np.float64)
    final = steps[-1][1]
    coef = np.asarray(final.coef_, dtype=np.float64).reshape(-1)
    intercept = float(np.asarray(final.intercept_, dtype=np.float64).reshape(-1)[0])
    return np.full(len(inputs), intercept), inputs * coef


def explanations(model: ScoringModel, matrix: Matrix) -> list[dict[str, Any] | None]:
    """Per row: base value, margin, the top contributions by size, and `rest`.

    Margin space as `explain`; per row `base_value + sum(contributions) + rest ==
    margin`, `rest` summing the contributions not listed. `value` is what the
    model read (declared defaults filled; None for a missing value).
    """
    base, contributions = explain(model, matrix)
    names = list(model.features)
    out: list[dict[str, Any] | None] = []
    for k, row in enumerate(contributions):
        top = np.argsort(-np.abs(row), kind="stable")[:_TOP]
        listed = [
            {
                "feature": names[j],
                "value": None if np.isnan(matrix[k, j]) else float(matrix[k, j]),
                "contribution": float(row[j]),
            }
            for j in top
        ]
        out.append(
            {
                "base_value": float(base[k]),
                "margin": float(base[k] + row.sum()),
                "contributions": listed,
                "rest": float(row.sum() - row[top].sum()),
            }
        )
    return out
