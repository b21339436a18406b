"""Shared fixtures: workspaces under tmp_path and a small fraud run."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aistack.contract import get_use_case
from aistack.features.online import materialize, open_store
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.governance.keys import new_key_file
from aistack.registry.aliases import Registry
from aistack.runner import RunReport, run
from aistack.settings import load_settings
from aistack.workspace import Workspace
from servers import postgres_server

# the whole flchain extract (7,874 patients, ~5 s): on 1,500 the 440 test rows
# make the calibration gate a noise test (a perfectly calibrated model's
# expected calibration error is 0.034 there, 0.051 at its 95th percentile)
PATIENTS = {"patients": 7874}
SMALL_FRAUD = {"customers": 400, "terminals": 800, "days": 60, "bad_rows": 2}


def make_workspace(root: Path) -> Workspace:
    """A workspace with its own Delta tables and SQLite MLflow store under `root`."""
    return Workspace(load_settings(workspace=root, seed=7))


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def fraud_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, RunReport]:
    """One small end-to-end fraud run, shared read-only by many tests."""
    ws = make_workspace(tmp_path_factory.mktemp("fraud") / "ws")
    uc = get_use_case("fraud")
    report = run(uc, ws, uc.params(**SMALL_FRAUD))
    return ws, report


@pytest.fixture(scope="session")
def pii_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fixed PII master key, set in AISTACK_PII_KEY for the session (servers and
    CLI subprocesses inherit it); the key never lies in a workspace. Fixed, so
    runs are reproducible: rows are ordered by (time, id) and an id may be a
    keyed pseudonym, so a fresh key would reorder ties, hence the CV folds (a
    gate's margin then moved from run to run)."""
    path = tmp_path_factory.mktemp("keys") / "pii.key"
    new_key_file(path)  # the CLI's own file format and mode
    key = hashlib.sha256(b"aistack test suite").hexdigest()
    path.write_text(key + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTACK_PII_KEY", key)
        yield key


@pytest.fixture(scope="session")
def patient_run(
    tmp_path_factory: pytest.TempPathFactory, pii_key: str
) -> tuple[Workspace, RunReport]:
    """One patient-risk run (the whole extract), shared read-only."""
    ws = make_workspace(tmp_path_factory.mktemp("patients") / "ws")
    uc = get_use_case("patient_risk")
    return ws, run(uc, ws, uc.params(**PATIENTS))


@pytest.fixture
def fraud_copy(fraud_run, tmp_path: Path) -> Workspace:
    """A private copy of the small run, for tests that move aliases or write."""
    source, _ = fraud_run
    shutil.copytree(source.settings.workspace, tmp_path / "copy")
    return make_workspace(tmp_path / "copy")


@pytest.fixture
def served_workspace(fraud_run, tmp_path: Path) -> Workspace:
    """A private copy of the small run (tests move aliases), materialized."""
    return served_copy(fraud_run, tmp_path / "served")


def served_copy(fraud_run: tuple[Workspace, RunReport], root: Path) -> Workspace:
    """A copy of the small run under `root`, materialized and bootstrapped."""
    source, _ = fraud_run
    shutil.copytree(source.settings.workspace, root)
    return materialized(make_workspace(root))


def materialized(ws: Workspace) -> Workspace:
    """The fraud run's online state (SQLite) built from its silver tables."""
    uc = get_use_case("fraud")
    materialize(ws.lake, open_store(None, ws.settings.workspace, uc.name), uc)
    events = open_event_state(None, ws.settings.workspace, uc.name)
    for view in uc.aggregation_views:
        bootstrap(ws.lake, events, uc, view)
    return ws


def other_version(registry: Registry, model: str, than: int | None) -> int:
    """Some registered version of `model` other than `than`."""
    return next(
        int(v.version)
        for v in registry.client.search_model_versions(f"name = '{model}'")
        if int(v.version) != than
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One throwaway PostgreSQL 15 server for the session; tests create databases."""
    with postgres_server() as url:
        yield url
