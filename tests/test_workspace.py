"""The workspace: the MLflow database is built from a cached empty copy, and only
when a command needs the registry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from aistack.settings import load_settings
from aistack.workspace import Workspace, create_tracking_db


def _schema(db: Path) -> list[tuple[str, str]]:
    """Every table and index definition, and the migration the schema is at."""
    with sqlite3.connect(db) as con:
        rows = con.execute(  # names: MLflow's batch migrations word the SQL
            "SELECT type, name FROM sqlite_master ORDER BY name"  # differently
        ).fetchall()
        rows += con.execute("SELECT 'alembic', version_num FROM alembic_version")
    con.close()
    return rows


def test_a_new_tracking_db_is_mlflows_own_schema_from_the_cached_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    reference = tmp_path / "reference.db"
    MlflowClient(tracking_uri=f"sqlite:///{reference}").search_experiments()
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    for db in (first, second):
        db.parent.mkdir()
        create_tracking_db(f"sqlite:///{db}")
    templates = list((tmp_path / "cache" / "aistack").glob("mlflow-*-empty.db"))
    assert len(templates) == 1  # built once, copied twice
    assert _schema(first) == _schema(second) == _schema(reference)
    with sqlite3.connect(second) as con:
        location = con.execute(
            "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
        ).fetchone()[0]
    con.close()
    assert location == str(tmp_path / "mlruns" / "0")  # as MLflow gives it here
    client = MlflowClient(tracking_uri=f"sqlite:///{second}")
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_a_workspace_opens_mlflow_only_when_the_registry_is_used(
    tmp_path: Path,
) -> None:
    ws = Workspace(load_settings(workspace=tmp_path / "ws"))
    db = Path(ws.settings.mlflow_uri.removeprefix("sqlite:///"))
    assert ws.lake.tables() == []
    assert not db.exists()
    assert ws.registry.version_of("fraud", "champion") is None
    assert db.exists()
