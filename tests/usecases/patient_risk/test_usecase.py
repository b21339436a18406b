"""Patient risk end to end on 1,500 flchain patients: gates and explanations."""

from __future__ import annotations

import json
import math
import shutil

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from aistack.contract import get_use_case
from aistack.runner import default_score_range
from aistack.serving.batch import score_range
from aistack.training.explain import explain
from aistack.training.sets import build_training_set
from aistack.training.tracking import tracking
from aistack.usecases.patient_risk.contract import HORIZON_DAYS, patients
from aistack.usecases.patient_risk.source import flchain, synthetic_identity
from conftest import make_workspace


def test_label_is_death_within_the_horizon_and_unknown_when_censored() -> None:
    raw = pl.DataFrame(
        {
            "futime": [str(HORIZON_DAYS - 1), str(HORIZON_DAYS + 1), "100", "x"],
            "death": ["1", "1", "0", "1"],
            "kappa": ["1"] * 4,
            "lambda": ["1"] * 4,
        }
    )
    assert patients(raw)["died_within_5y"].to_list() == [1, 0, None, None]


def test_identities_are_deterministic_and_national_ids_unique() -> None:
    frame = flchain().iloc[:500]
    one, two = synthetic_identity(frame, 3), synthetic_identity(frame, 3)
    pd.testing.assert_frame_equal(one, two)
    assert one["national_id"].is_unique
    assert not synthetic_identity(frame, 4).equals(one)


def test_both_models_pass_every_declared_gate(patient_run) -> None:
    _, report = patient_run
    assert {c.trainer for c in report.candidates} == {"xgboost", "logistic"}
    for candidate in report.candidates:
        gates = {g.name: g for g in candidate.gates}
        for name in (
            "floor_roc_auc",
            "floor_calibration_error",
            "invariant_national_id",
            "monotonic_age",
        ):
            assert gates[name].passed, (candidate.trainer, gates[name].detail)
        assert candidate.metrics["roc_auc"] > 0.8
    assert report.champion is not None


def test_contributions_plus_base_equal_the_margin(patient_run) -> None:
    ws, report = patient_run
    uc = get_use_case("patient_risk")
    data = build_training_set(
        ws.lake, uc, as_of=pd.Timestamp("2030-01-01").to_pydatetime(), seed=7
    )
    with tracking(ws.settings.mlflow_uri):
        for candidate in report.candidates:
            model = mlflow.sklearn.load_model(
                f"models:/patient_risk/{candidate.version}"
            )
            matrix = model.input_matrix(data.test[uc.model_inputs])
            base, contributions = explain(model, matrix)
            proba = np.clip(model.predict_matrix(matrix), 1e-12, 1 - 1e-12)
            margin = np.log(proba / (1 - proba))
            assert contributions.shape == (len(matrix), len(uc.feature_names))
            np.testing.assert_allclose(
                base + contributions.sum(axis=1), margin, atol=1e-4
            )
            # age carries risk: its contribution rises with age
            age = uc.feature_names.index("age")
            assert np.corrcoef(matrix[:, age], contributions[:, age])[0, 1] > 0.5


def test_batch_scoring_writes_explanations_that_add_up(patient_run, tmp_path) -> None:
    source, _ = patient_run
    shutil.copytree(source.settings.workspace, tmp_path / "ws")
    ws = make_workspace(tmp_path / "ws")
    uc = get_use_case("patient_risk")
    shutil.rmtree(ws.lake.path(uc.predictions_table))  # scored without explanations
    with tracking(ws.settings.mlflow_uri):
        start, end = default_score_range(ws, uc)
        score_range(ws.lake, uc, ws.registry, start=start, end=end, explain=True)
    rows = ws.lake.read(uc.predictions_table).to_pylist()
    assert len(rows) == 7874 - ws.lake.rows("quarantine.patients")
    for row in rows[:200]:
        found = json.loads(row["explanation"])
        total = (
            found["base_value"]
            + sum(c["contribution"] for c in found["contributions"])
            + found["rest"]
        )
        assert abs(total - found["margin"]) < 1e-9
        assert abs(1 / (1 + math.exp(-total)) - row["score"]) < 1e-6
