"""Patient risk's models, gates, explanations and cards on the second, small
data set of the issue: MASS Pima.tr (train) / Pima.te (test), a test-only use
case (tests/pima_usecase.py)."""

from __future__ import annotations

from datetime import datetime

import mlflow
import numpy as np
import pytest
from scipy.special import logit

from aistack.runner import run
from aistack.training.explain import explain
from aistack.training.sets import build_training_set
from aistack.training.tracking import tracking
from conftest import make_workspace
from pima_usecase import FEATURES, TEST_ROWS, TRAIN_ROWS, pima, use_case


@pytest.fixture(scope="module")
def pima_run(tmp_path_factory, pii_key):
    ws = make_workspace(tmp_path_factory.mktemp("pima") / "ws")
    return ws, run(use_case, ws, use_case.params())


def test_pima_trains_on_pima_tr_and_tests_on_pima_te(pima_run) -> None:
    ws, _ = pima_run
    assert ws.lake.rows("silver.women") == TRAIN_ROWS + TEST_ROWS
    data = build_training_set(ws.lake, use_case, as_of=datetime(2030, 1, 1), seed=7)
    assert (data.split["train_rows"], data.split["test_rows"]) == (200, 332)
    shipped = pima()
    for part, rows in ((data.train, shipped[:TRAIN_ROWS]), (data.test, shipped[200:])):
        got = part[list(FEATURES)].sort_values(list(FEATURES)).to_numpy(float)
        want = rows[list(FEATURES)].sort_values(list(FEATURES)).to_numpy(float)
        np.testing.assert_array_equal(got, want)
    stored = ws.lake.read("silver.women").column("full_name").to_pylist()
    assert all(v.startswith("enc1:") for v in stored)  # kept encrypted


def test_both_models_pass_every_gate_and_explanations_add_up(pima_run) -> None:
    ws, report = pima_run
    assert {c.trainer for c in report.candidates} == {"xgboost", "logistic"}
    data = build_training_set(ws.lake, use_case, as_of=datetime(2030, 1, 1), seed=7)
    with tracking(ws.settings.mlflow_uri):
        for candidate in report.candidates:
            gates = {g.name: g for g in candidate.gates}
            assert set(gates) >= {
                "floor_roc_auc",
                "floor_calibration_error",
                "invariant_national_id",
                "monotonic_glu",
            }
            assert candidate.passed, [(g.name, g.detail) for g in candidate.gates]
            model = mlflow.sklearn.load_model(f"models:/pima/{candidate.version}")
            matrix = model.input_matrix(data.test[use_case.model_inputs])
            base, contributions = explain(model, matrix)
            proba = model.predict_matrix(matrix)
            np.testing.assert_allclose(
                base + contributions.sum(axis=1), logit(proba), atol=1e-4
            )
    assert report.champion is not None


def test_pima_model_cards_carry_every_section(pima_run) -> None:
    _, report = pima_run
    assert len(report.model_cards) == 2
    for card in report.model_cards:
        text = card.read_text(encoding="utf-8")
        for part in (
            "Intended use",
            "Data lineage",
            "silver.women",
            "Metrics per slice",
            "Gaps between groups",
            "Calibration",
            "monotonic_glu",
            "&lt;30",
            "45+",
        ):
            assert part in text, (card.name, part)
