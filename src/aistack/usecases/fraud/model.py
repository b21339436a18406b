"""Fraud models: an unsupervised IsolationForest and a supervised XGBoost."""

from __future__ import annotations

from sklearn.ensemble import IsolationForest
from xgboost import XGBClassifier

from aistack.contract import Trainer


def isolation_forest(seed: int) -> IsolationForest:
    """Anomaly detector: needs no labels, catches the unusual."""
    return IsolationForest(n_estimators=100, random_state=seed, n_jobs=2)


def xgboost(seed: int) -> XGBClassifier:
    """Gradient-boosted trees on the labelled history, the handbook's best model."""
    return XGBClassifier(
        n_estimators=100,
        max_depth=6,
        learning_rate=0.3,
        random_state=seed,
        n_jobs=2,
        eval_metric="aucpr",
    )


trainers = (
    Trainer("isolation_forest", isolation_forest, supervised=False),
    Trainer("xgboost", xgboost, supervised=True),
)
