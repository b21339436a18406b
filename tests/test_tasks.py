"""Every task end to end: ingest, silver, train, gate, promote, batch score, serve
(the task's own response schema), monitor, on use cases with no entity and no
feature view (tests/task_usecases.py, registered as a plugin package)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aistack.contract import UseCase
from aistack.monitoring.monitor import run_monitor
from aistack.runner import run
from aistack.training.tracking import tracking
from aistack.workspace import Workspace
from conftest import make_workspace
from servers import aistack_server
from task_usecases import diabetes, sensors, wine

TESTS = Path(__file__).parent


def plugin_site(root: Path, points: dict[str, str]) -> dict[str, str]:
    """A site folder declaring `points` as aistack use cases; the env to use it."""
    info = root / "task_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: task-plugins\nVersion: 0.1\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[aistack.use_cases]\n{lines}")
    return {"PYTHONPATH": f"{root}:{TESTS}"}


def _rows(uc: UseCase, n: int) -> list[dict]:
    x, _ = _data(uc)
    features = list(uc.row_features)
    return [
        {
            "row_id": i,  # rows of the table: their labels are known
            **(
                {"observed_at": f"2024-03-01T00:{i % 60:02d}:00"}
                if uc.labels.timestamp
                else {}
            ),
            **{f: float(x[i, j]) for j, f in enumerate(features)},
        }
        for i in range(n)
    ]


def _data(uc: UseCase) -> tuple[np.ndarray, np.ndarray]:
    full = pa.concat_tables([b.data for b in uc.read_sources(uc.params(), 7)])
    x = np.column_stack([full[f].to_numpy() for f in uc.row_features])
    return x, full[uc.labels.label].to_numpy()


def _check_answer(task: str, answer: dict) -> None:
    if task == "multiclass":
        assert set(answer) >= {"class", "probabilities"}
        assert "score" not in answer and "decision" not in answer
        probabilities = answer["probabilities"]
        assert set(probabilities) == {"0", "1", "2"}
        assert abs(sum(probabilities.values()) - 1) < 1e-9
        assert answer["class"] == max(probabilities, key=probabilities.get)
    elif task == "regression":
        assert isinstance(answer["value"], float)
        assert "score" not in answer and "decision" not in answer
        assert 0 < answer["value"] < 400
        low, high = answer["interval"]  # ridge declares a 90 % interval
        assert low < answer["value"] < high
    else:
        assert task == "anomaly"
        assert set(answer) >= {"score", "anomaly"} and "decision" not in answer
        assert answer["anomaly"] == (answer["score"] >= 0.6)


@pytest.mark.parametrize(
    "uc",
    [wine, pytest.param(diabetes, marks=pytest.mark.slow), sensors],
    ids=lambda u: u.name,
)
def test_a_task_runs_end_to_end(uc: UseCase, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    report = run(uc, ws, uc.params())
    assert report.ingest is not None
    rows = report.ingest.new_rows["bronze.rows"]
    assert rows == len(_data(uc)[1])
    assert report.champion is not None, [c.gates for c in report.candidates]
    primary = uc.gates.primary_metric
    if uc is wine:  # log-loss: lower is better, and the champion has the lowest
        losses = {c.trainer: c.metrics[primary] for c in report.candidates}
        assert report.champion.metrics[primary] == min(
            c.metrics[primary] for c in report.candidates if c.passed
        ), losses
        assert report.champion.metrics["accuracy"] > 0.85
    if uc is diabetes:  # the near-constant model fails its rmse ceiling
        verdicts = {c.trainer: c.passed for c in report.candidates}
        assert verdicts == {"ridge": True, "mean": False}
        assert report.champion.metrics["r2"] > 0.3
        gates = {g.name for g in report.champion.gates}
        assert "score_range" not in gates  # values are not probabilities
        assert "monotonic_bmi" in gates
        # the 90 % interval, calibrated on validation rows, on the 89 test rows
        assert 0.8 <= report.champion.metrics["interval_coverage"] <= 1.0
    if uc is sensors:
        assert report.champion.metrics["roc_auc"] > 0.9
    assert report.scoring is not None and report.scoring.rows == rows

    with tracking(ws.settings.mlflow_uri):
        run_ = mlflow.get_run(report.champion.run_id)
        split = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_.info.run_id, artifact_path="split.json"
                )
            ).read_text()
        )
        assert split["kind"] == uc.split.kind
        assert split["test_rows"] + split["valid_rows"] + split["train_rows"] == rows
        assert run_.data.params["task"] == uc.task
        requirements = (
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_.info.run_id, artifact_path="model/requirements.txt"
                )
            )
            .read_text()
            .split()
        )
        names = {r.split("==")[0] for r in requirements}
        assert "aistack" in names and "scikit-learn" in names
        assert "xgboost-cpu" not in names  # only what this model needs

    env = plugin_site(tmp_path / "site", {uc.name: f"task_usecases:{uc.name}"})
    with aistack_server(ws.settings.workspace, env=env, use_case=uc.name) as (base, _):
        one = httpx.post(f"{base}/v1/{uc.name}/predict", json=_rows(uc, 1)[0])
        assert one.status_code == 200, one.text
        _check_answer(uc.task, one.json())
        many = httpx.post(
            f"{base}/v1/{uc.name}/predict/batch", json={"rows": _rows(uc, 60)}
        )
        assert many.status_code == 200, many.text
        for answer in many.json()["predictions"]:
            _check_answer(uc.task, answer)
        schema = httpx.get(f"{base}/openapi.json").json()["components"]["schemas"]
        answer_schema = {
            "multiclass": "MulticlassPrediction",
            "regression": "RegressionPrediction",
            "anomaly": "AnomalyPrediction",
        }[uc.task]
        assert answer_schema in schema
    result = run_monitor(ws, uc, window=None, report_path=tmp_path / "report.html")
    assert result.current_rows == 61
    assert not result.performance.empty  # labels joined: live metrics per day
    assert (tmp_path / "report.html").stat().st_size > 0
    if uc.labels.timestamp is None:
        _check_no_clock(ws, uc, result.performance)


def _check_no_clock(ws: Workspace, uc: UseCase, performance: pd.DataFrame) -> None:
    """No timestamp anywhere (no fake one either); windows use the scoring time."""
    for table in ("silver.rows", uc.predictions_table):
        names = set(ws.lake.read(table).schema.names)
        clocks = {n for n in names if "time" in n or n.endswith("_at")}
        assert clocks <= {"scored_at", "_processed_at", "_ingested_at"}, table
    log = ws.lake.read(f"ops.{uc.name}_prediction_log").to_pandas()
    assert log["event_time"].isna().all()
    # live metrics are per day the rows were scored
    days = [d.date() for d in performance["day"]]
    assert days == sorted(set(log["logged_at"].dt.date))
