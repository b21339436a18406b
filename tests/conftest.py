"""Shared fixtures: workspaces under tmp_path and a small fraud run."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistack.platform.pipeline import RunReport, Workspace, run
from aistack.platform.usecase import get_use_case
from aistack.settings import load_settings

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
