"""Patient-risk models: XGBoost (risk non-decreasing in age by construction) and
a calibrated logistic regression on standardised features; metrics and slices."""

from __future__ import annotations

import pandas as pd
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from aistack.contract import Metric, Trainer
from aistack.training.metrics import (
    average_precision,
    brier,
    calibration_error,
    roc_auc,
)

ROW_FEATURES = ("age", "kappa_flc", "lambda_flc", "mgus")
MEDIAN_CREATININE = 1.0  # mg/dL, flchain's median: the value of a missing one
request_features = {
    "female": (pl.col("sex") == "F").cast(pl.Float64),
    "creatinine_mg_dl": pl.col("creatinine")
    .cast(pl.Float64)
    .fill_null(MEDIAN_CREATININE),
    "creatinine_missing": pl.col("creatinine").is_null().cast(pl.Float64),
}
FEATURES = (*ROW_FEATURES, *request_features)


def monotone_xgboost(
    seed: int,
    *,
    features: tuple[str, ...] = FEATURES,
    increasing: str = "age",
    n_estimators: int = 120,
    max_depth: int = 3,
    learning_rate: float = 0.05,
) -> XGBClassifier:
    """Shallow boosted trees, constrained to a risk that never falls as the
    feature `increasing` rises (age here)."""
    monotone = tuple(1 if f == increasing else 0 for f in features)
    return XGBClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        monotone_constraints=str(monotone).replace(" ", ""),
        random_state=seed,
        n_jobs=2,
    )


def logistic_regression(seed: int) -> CalibratedClassifierCV:
    """Standardised features and a logistic regression, calibrated by a Platt
    sigmoid fitted on its 5-fold out-of-fold margins (the calibration gate
    checks the result).

    Sigmoid, not isotonic: two parameters stay stable on small sets (Pima
    trains on 200 rows) where an isotonic step function overfits and ties
    scores; and it is an increasing affine map of the log-odds, so ranking,
    the monotonic-age gate and exact linear explanations all survive.
    `ensemble=False`: one model refitted on every row and one sigmoid, hence
    one set of coefficients to explain.
    """
    linear = Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000, random_state=seed)),
        ]
    )
    return CalibratedClassifierCV(linear, method="sigmoid", cv=5, ensemble=False)


trainers = (
    Trainer("xgboost", monotone_xgboost, requirements=("xgboost-cpu==3.2.0",)),
    Trainer("logistic", logistic_regression),
)
metrics: dict[str, Metric] = {
    "roc_auc": roc_auc,
    "average_precision": average_precision,
    "brier": brier,
    "calibration_error": calibration_error,
}


AGE_BANDS = (0, 60, 70, 80, 200)
INTENDED_USE = (
    "Flags adults whose serum free light chain sample and age put them at high "
    "risk of dying within five years, so a clinician reviews them earlier. It "
    "supports, never replaces, clinical judgement; it is not for diagnosis, "
    "triage of emergencies, insurance or employment decisions. Trained on "
    "residents of one US county sampled 1995-2003 (flchain): risk levels may "
    "not transfer to other populations or eras."
)


def age_band(frame: pd.DataFrame) -> pd.Series:
    """Slice: age at sampling, in bands (<60, 60-69, 70-79, 80+)."""
    labels = ["<60", "60-69", "70-79", "80+"]
    return pd.cut(frame["age"], AGE_BANDS, right=False, labels=labels).astype(str)


def sex(frame: pd.DataFrame) -> pd.Series:
    """Slice: sex as recorded (F, M)."""
    return frame["sex"].astype(str)
