"""A second use case, defined only in the tests, runs through the same platform API.

Also: broken models are refused promotion with the reason on their MLflow run,
and re-running on the same inputs trains nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.ensemble import IsolationForest

from aistack.contract import Trainer
from aistack.errors import RegistryError
from aistack.runner import run
from aistack.training.fit import training_key
from aistack.training.tracking import lineage_of, tracking
from cancer_usecase import cancer_use_case, constant_model, id_reading_model


@pytest.fixture
def broken_run(workspace):
    uc = cancer_use_case(
        extra_trainers=(
            Trainer("constant", constant_model, supervised=True),
            Trainer(
                "reads_id",
                id_reading_model,
                supervised=True,
                inputs=("exam_id", "worst_area", "mean_concavity"),
            ),
        )
    )
    return uc, workspace, run(uc, workspace, uc.params())


def test_second_use_case_end_to_end(broken_run) -> None:
    uc, ws, report = broken_run
    lake = ws.lake
    assert lake.rows("bronze.exams") == 569
    assert lake.rows("silver.exams") == 569
    assert lake.rows("gold.cancer_exam_measures") == 569
    logistic = next(c for c in report.candidates if c.trainer == "logistic")
    assert logistic.passed, logistic.gates
    assert logistic.metrics["roc_auc"] > 0.9
    assert report.champion is not None and report.champion.trainer == "logistic"
    assert ws.registry.version_of("cancer", "champion") == logistic.version
    predictions = lake.read(uc.predictions_table)
    assert predictions.num_rows > 0
    assert set(predictions.column("model_version").to_pylist()) == {logistic.version}
    with tracking(ws.settings.mlflow_uri):
        lineage = lineage_of(logistic.run_id)
    assert lineage == {"gold.cancer_exam_measures": 0, "silver.exams": 0}


def test_broken_models_are_refused_with_the_reason_on_the_run(broken_run) -> None:
    _, ws, report = broken_run
    by_name = {c.trainer: c for c in report.candidates}
    client = MlflowClient(ws.settings.mlflow_uri)
    constant = by_name["constant"]
    assert not constant.passed
    tags = client.get_run(constant.run_id).data.tags
    assert tags["aistack.gates_passed"] == "false"
    assert tags["gate.output_shape"].startswith("FAIL")
    assert "varies=False" in tags["gate.output_shape"]
    reads_id = by_name["reads_id"]
    assert not reads_id.passed
    run_data = client.get_run(reads_id.run_id).data
    assert run_data.tags["gate.invariant_exam_id"].startswith("FAIL")
    assert run_data.metrics["gate.invariant_exam_id"] == 0.0
    gates = json.loads(
        open(  # noqa: SIM115
            mlflow.artifacts.download_artifacts(
                run_id=reads_id.run_id,
                artifact_path="gates.json",
                tracking_uri=ws.settings.mlflow_uri,
            )
        ).read()
    )
    assert gates["invariant_exam_id"]["passed"] is False
    # neither became champion nor challenger: registered, tagged refused
    assert ws.registry.version_of("cancer", "champion") == by_name["logistic"].version
    moves = [(e.alias, e.to_version) for e in ws.registry.history("cancer")]
    for refused in (constant, reads_id):
        assert ("champion", refused.version) not in moves
        assert ("challenger", refused.version) not in moves
    why = {
        c.trainer: ws.registry.refused("cancer", c.version) or ""
        for c in by_name.values()
    }
    assert "output_shape" in why["constant"]
    assert "invariant_exam_id" in why["reads_id"]
    assert ws.registry.refused("cancer", by_name["logistic"].version) is None


def test_a_version_that_failed_its_gates_is_promoted_only_by_force(broken_run) -> None:
    _, ws, report = broken_run
    reads_id = next(c for c in report.candidates if c.trainer == "reads_id")
    good = next(c for c in report.candidates if c.trainer == "logistic")
    assert ws.registry.failed_gates("cancer", good.version) == []
    assert "invariant_exam_id" in ws.registry.failed_gates("cancer", reads_id.version)
    with pytest.raises(RegistryError, match="failed its gates"):
        ws.registry.promote("cancer", reads_id.version, actor="t", reason="why not")
    with pytest.raises(RegistryError, match="--reason"):
        ws.registry.promote(
            "cancer", reads_id.version, actor="t", reason="", force=True
        )
    event = ws.registry.promote(
        "cancer", reads_id.version, actor="t", reason="drill", force=True
    )
    assert "forced past failed gates" in event.reason
    ws.registry.promote("cancer", good.version, actor="t", reason="back")


def test_rerun_on_same_inputs_trains_and_moves_nothing(broken_run) -> None:
    uc, ws, report = broken_run
    tables = {t.name: (t.version, t.rows) for t in ws.lake.tables()}
    again = run(uc, ws, uc.params())
    assert all(c.reused for c in again.candidates)
    assert {c.version for c in again.candidates} == {
        c.version for c in report.candidates
    }
    assert {t.name: (t.version, t.rows) for t in ws.lake.tables()} == tables
    assert again.scoring is not None and again.scoring.skipped


def test_the_training_key_follows_hyperparameters_and_code() -> None:
    uc = cancer_use_case()

    def forest(n: int) -> Trainer:
        return Trainer(
            "forest",
            lambda seed: IsolationForest(n_estimators=n, random_state=seed),
            False,
        )

    lineage = {"silver.exams": 3}
    same = training_key(uc, forest(50), lineage, 7)
    assert training_key(uc, forest(50), lineage, 7) == same
    assert training_key(uc, forest(80), lineage, 7) != same  # a hyperparameter
    other_code = replace(
        forest(50),
        build=lambda seed: IsolationForest(n_estimators=50, random_state=seed + 0),
    )
    assert training_key(uc, other_code, lineage, 7) != same  # the trainer's code


def test_tracking_restores_both_uris(tmp_path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/a.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/b.db")
    with tracking(f"sqlite:///{tmp_path}/c.db"):
        assert mlflow.get_registry_uri().endswith("c.db")
    assert mlflow.get_tracking_uri().endswith("a.db")
    assert mlflow.get_registry_uri().endswith("b.db")
