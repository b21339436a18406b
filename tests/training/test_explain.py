"""Explanations add up: base + contributions == the model's margin, row by row."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from aistack.contract import get_use_case
from aistack.errors import SchemaError
from aistack.registry.artifacts import load_model
from aistack.training.explain import explain
from aistack.training.models import ScoringModel
from aistack.training.sets import labelled_frame
from aistack.training.tracking import tracking
from cancer_usecase import FEATURES, cancer_use_case


def model_matrix(model: ScoringModel, frame) -> np.ndarray:
    defaults = {k: v for k, v in model.defaults.items() if k in model.features}
    return frame[model.features].astype("float64").fillna(defaults).to_numpy()


def test_xgboost_champion_contributions_add_up_to_the_log_odds(fraud_run) -> None:
    ws, report = fraud_run
    uc = get_use_case("fraud")
    xgb = next(c for c in report.candidates if c.trainer == "xgboost")
    with tracking(ws.settings.mlflow_uri):
        model = load_model(ws.registry, "fraud", xgb.version)
    lineage = ws.lake.versions([uc.labels.table, *(uc.gold_table(v) for v in uc.views)])
    frame = labelled_frame(
        ws.lake,
        uc,
        datetime(2000, 1, 1),
        datetime(2100, 1, 1),
        as_of=datetime.now(UTC),
        lineage=lineage,
    )
    matrix = model_matrix(model, frame.head(2000))
    base, contributions = explain(model, matrix)
    assert contributions.shape == matrix.shape
    margin = model.estimator.predict(matrix, output_margin=True)
    np.testing.assert_allclose(base + contributions.sum(axis=1), margin, atol=1e-5)
    # TreeSHAP sums in float32; against the probability it is the same margin
    proba = np.clip(model.predict_matrix(matrix), 1e-7, 1 - 1e-7)
    assert np.abs(base + contributions.sum(axis=1) - logit(proba)).max() < 1e-3
    assert np.abs(contributions).sum(axis=0).max() > 0


def test_logistic_pipeline_contributions_add_up_to_the_log_odds() -> None:
    uc = cancer_use_case()
    data = load_breast_cancer()
    columns = [list(data.feature_names).index(f.replace("_", " ")) for f in FEATURES]
    x = data.data[:, columns]
    y = 1 - data.target
    trainer = uc.trainers[0]
    model = ScoringModel(
        trainer.model(0), list(FEATURES), uc.feature_defaults, supervised=True
    )
    model.fit(pd.DataFrame(x, columns=list(FEATURES)), y)
    base, contributions = explain(model, x)
    margin = model.estimator.decision_function(x)
    np.testing.assert_allclose(base + contributions.sum(axis=1), margin, atol=1e-6)
    unsaturated = np.abs(margin) < 20  # where logit(probability) is still exact
    np.testing.assert_allclose(
        (base + contributions.sum(axis=1))[unsaturated],
        logit(model.predict_matrix(x[unsaturated])),
        atol=1e-6,
    )
    scaled = model.estimator[:-1].transform(x)
    coef = model.estimator[-1].coef_[0]
    np.testing.assert_allclose(contributions, scaled * coef, atol=1e-12)


def test_models_it_cannot_explain_raise_a_schema_error() -> None:
    x = np.random.default_rng(0).random((50, 2))
    forest = ScoringModel(
        IsolationForest(random_state=0), ["a", "b"], {}, supervised=False
    )
    forest.fit(pd.DataFrame(x, columns=["a", "b"]))
    with pytest.raises(SchemaError, match="cannot explain model IsolationForest"):
        explain(forest, x)
    forest.task = "anomaly"
    with pytest.raises(SchemaError, match="not the anomaly task"):
        explain(forest, x)


def _cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    columns = [list(data.feature_names).index(f.replace("_", " ")) for f in FEATURES]
    return data.data[:, columns], 1 - data.target


def _calibrated(method: str = "sigmoid", *, ensemble: bool = False, inner=None):
    inner = inner or make_pipeline(StandardScaler(), LogisticRegression(C=0.05))
    model = ScoringModel(
        CalibratedClassifierCV(inner, method=method, cv=5, ensemble=ensemble),
        list(FEATURES),
        {},
        supervised=True,
    )
    x, y = _cancer()
    return model.fit(pd.DataFrame(x, columns=list(FEATURES)), y), x


def test_sigmoid_calibrated_contributions_add_up_to_the_calibrated_log_odds() -> None:
    model, x = _calibrated()
    base, contributions = explain(model, x)
    calibrated = model.predict_matrix(x)
    unsaturated = (calibrated > 1e-9) & (calibrated < 1 - 1e-9)
    assert unsaturated.mean() > 0.9
    np.testing.assert_allclose(
        (base + contributions.sum(axis=1))[unsaturated],
        logit(calibrated[unsaturated]),
        atol=1e-6,
    )
    # the calibration moved the log-odds: the uncalibrated margin differs
    inner = model.estimator.calibrated_classifiers_[0].estimator
    assert np.abs(inner.decision_function(x) - logit(calibrated)).max() > 0.1
    # each contribution is the linear one scaled by the sigmoid's slope
    linear = inner[:-1].transform(x) * inner[-1].coef_[0]
    slope = -model.estimator.calibrated_classifiers_[0].calibrators[0].a_
    np.testing.assert_allclose(contributions, slope * linear, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"method": "isotonic"}, "method='isotonic'"),
        ({"ensemble": True}, "ensemble=True"),
        ({"inner": XGBClassifier(n_estimators=5)}, "no margin"),
    ],
)
def test_calibrations_that_are_not_affine_in_the_margin_are_refused(
    kwargs, why
) -> None:
    model, x = _calibrated(**kwargs)
    with pytest.raises(SchemaError, match=why):
        explain(model, x)
