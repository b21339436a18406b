"""Challengers that should never win: they raise, stall, or score differently."""

from __future__ import annotations

import time

import cloudpickle
import mlflow
import numpy as np
from sklearn.base import BaseEstimator

from aistack.contract import get_use_case
from aistack.registry.artifacts import record_digest
from aistack.training.models import ScoringModel
from aistack.training.tracking import experiment_id, tracking


class Raising(BaseEstimator):
    def fit(self, x, y=None):
        return self

    def predict_proba(self, x):
        raise RuntimeError("challenger bug")


class Slow(BaseEstimator):
    def __init__(self, inner=None, seconds: float = 0.06) -> None:
        self.inner = inner
        self.seconds = seconds

    def predict_proba(self, x):
        time.sleep(self.seconds)
        return self.inner.predict_proba(x)


class Shifted(BaseEstimator):
    def __init__(self, inner=None) -> None:
        self.inner = inner

    def predict_proba(self, x):
        p = self.inner.predict_proba(x)[:, 1]
        shifted = 0.5 + 0.5 * p
        return np.column_stack([1 - shifted, shifted])


def register(ws, kind: str) -> int:
    """Register a challenger built from the champion: raising, slow, shifted, same."""
    uc = get_use_case("fraud")
    cloudpickle.register_pickle_by_value(__import__(__name__))
    with tracking(ws.settings.mlflow_uri):
        champion = mlflow.sklearn.load_model("models:/fraud@champion")
        inner = champion.estimator
        estimator = {
            "raising": Raising(),
            "slow": Slow(inner),
            "shifted": Shifted(inner),
            "same": inner,
        }[kind]
        model = ScoringModel(
            estimator, champion.features, champion.defaults, supervised=True
        )
        model.n_features_in_ = len(champion.features)
        experiment = experiment_id(uc, ws.settings.artifacts_dir.resolve().as_uri())
        with mlflow.start_run(experiment_id=experiment, run_name=f"challenger-{kind}"):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="cloudpickle",
                pip_requirements=[],
                registered_model_name="fraud",
            )
        version = int(info.registered_model_version)
        record_digest(ws.registry, "fraud", version)  # as registration does
    return version
