"""Aliases and their history: who moved what, when, and why."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from aistack.errors import RegistryError
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.workspace import create_tracking_db


def test_history_answers_which_version_was_champion(fraud_run, fraud_copy) -> None:
    _, report = fraud_run
    registry = fraud_copy.registry  # aliases move: a private copy of the run
    champion = registry.version_of("fraud", "champion")
    assert champion == report.champion.version
    versions = sorted(c.version for c in report.candidates)
    other = next(v for v in versions if v != champion)
    t0 = datetime.now(UTC)
    registry.move("fraud", "champion", other, actor="alice", reason="test: manual")
    t1 = datetime.now(UTC)
    registry.rollback("fraud", actor="bob", reason="test: rollback")
    assert registry.version_of("fraud", "champion") == champion
    aliases, _ = registry.registered("fraud")
    assert aliases["champion"] == champion
    assert registry.version_at("fraud", "champion", t0) == champion
    assert registry.version_at("fraud", "champion", t1) == other
    last = registry.history("fraud")[-1]
    assert (last.alias, last.from_version, last.to_version) == (
        "champion",
        other,
        champion,
    )
    assert (last.actor, last.reason) == ("bob", "test: rollback")
    tag = registry.client.get_model_version("fraud", str(champion)).tags[
        "champion_reason"
    ]
    assert tag == "test: rollback"


def test_unknown_version_is_refused(fraud_run) -> None:
    ws, _ = fraud_run
    with pytest.raises(RegistryError, match="no version 999"):
        ws.registry.move("fraud", "champion", 999, actor="x", reason="y")


def test_a_registry_that_cannot_answer_is_not_no_champion(tmp_path) -> None:
    db = tmp_path / "mlflow.db"
    create_tracking_db(f"sqlite:///{db}")
    registry = Registry(Lake(tmp_path / "tables"), f"sqlite:///{db}")
    assert registry.version_of("fraud", "champion") is None  # absent: None
    assert registry.registered("fraud") == ({}, {})
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:  # side by side: each waits out MLflow's 20 s busy timeout
        with ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(registry.version_of, "fraud", "champion"),
                pool.submit(registry.registered, "fraud"),  # the server's poll
            ]
            for call in calls:
                with pytest.raises(RegistryError, match="database is locked"):
                    call.result()
    finally:
        lock.execute("ROLLBACK")
