"""MLflow tracking and registry on a real PostgreSQL 15: the production store.

Training, gates, promotion, alias history, rollout state and the server's
registry polling run against `postgresql+psycopg://`, as they do on SQLite.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from aistack.contract import get_use_case
from aistack.errors import RegistryError
from aistack.registry.rollout import end_rollout, read_rollout, start_rollout
from aistack.runner import RunReport, run
from aistack.settings import load_settings
from aistack.workspace import Workspace, create_tracking_db
from conftest import materialized, other_version
from servers import aistack_server, create_database, free_port

TINY_FRAUD = {"customers": 60, "terminals": 120, "days": 35}
ROW = {
    "customer_id": 1,
    "terminal_id": 2,
    "tx_amount": 42.5,
    "tx_datetime": "2018-05-09T12:00:00",
}


def mlflow_uri(postgres: str, name: str) -> str:
    return create_database(postgres, name).replace(
        "postgresql://", "postgresql+psycopg://"
    )


def test_concurrent_first_use_creates_the_schema_once(postgres) -> None:
    uri = mlflow_uri(postgres, "race")
    code = f"from aistack.workspace import create_tracking_db as c; c({uri!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1].decode()[-500:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors


def test_an_unreachable_database_is_a_one_line_registry_error() -> None:
    uri = f"postgresql+psycopg://aistack:secret@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(RegistryError, match="tracking_uri: cannot use") as caught:
        create_tracking_db(uri)
    assert "secret" not in str(caught.value)


@pytest.fixture(scope="module")
def pg_fraud(postgres, tmp_path_factory) -> tuple[Workspace, RunReport, str]:
    """A tiny fraud run whose MLflow tracking and registry live in PostgreSQL."""
    uri = mlflow_uri(postgres, "fraud")
    root = tmp_path_factory.mktemp("pg") / "ws"
    ws = Workspace(load_settings(workspace=root, tracking_uri=uri, seed=7))
    uc = get_use_case("fraud")
    report = run(uc, ws, uc.params(**TINY_FRAUD))
    assert report.champion is not None
    return materialized(ws), report, uri


def test_train_promote_and_roll_out_on_postgres(pg_fraud) -> None:
    ws, report, uri = pg_fraud
    with psycopg.connect(uri.replace("+psycopg", "")) as con:  # runs are in PG
        runs = con.execute("SELECT count(*) FROM runs").fetchone()
    assert runs is not None
    assert runs[0] >= len(report.candidates) == len(get_use_case("fraud").trainers)
    registry = ws.registry
    champion = report.champion.version
    other = next(c.version for c in report.candidates if c.version != champion)
    registry.promote("fraud", other, actor="alice", reason="test", force=True)
    assert registry.version_of("fraud", "champion") == other
    registry.rollback("fraud", actor="bob", reason="test: back")
    assert registry.version_of("fraud", "champion") == champion
    moves = [(e.from_version, e.to_version) for e in registry.history("fraud")]
    assert moves[-2:] == [(champion, other), (other, champion)]
    start_rollout(registry, "fraud", mode="shadow", share=100, version=other, actor="t")
    assert read_rollout(registry, "fraud").active
    end_rollout(registry, "fraud", status="stopped", reason="test", actor="t")
    assert read_rollout(registry, "fraud").status == "stopped"


def test_the_server_follows_the_postgres_registry(pg_fraud) -> None:
    ws, _, uri = pg_fraud
    registry = ws.registry
    champion = registry.version_of("fraud", "champion")
    other = other_version(registry, "fraud", champion)
    env = {"AISTACK_TRACKING_URI": uri}
    with aistack_server(ws.settings.workspace, env=env) as (base, _):
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline, "server never ready"
            time.sleep(0.2)
        answer = httpx.post(f"{base}/v1/fraud/predict", json=ROW, timeout=30)
        assert answer.json()["model_version"] == champion
        registry.move("fraud", "champion", other, actor="t", reason="poll test")
        deadline = time.monotonic() + 60  # the server polls the registry
        while True:
            answer = httpx.post(f"{base}/v1/fraud/predict", json=ROW, timeout=30)
            if answer.json()["model_version"] == other:
                break
            assert time.monotonic() < deadline, "new champion never served"
            time.sleep(0.2)
