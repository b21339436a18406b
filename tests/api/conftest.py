"""A served copy of the shared small fraud run, materialized into SQLite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aistack.platform.online import materialize, open_store
from aistack.platform.pipeline import Workspace
from aistack.platform.usecase import get_use_case
from conftest import make_workspace


@pytest.fixture
def served_workspace(fraud_run, tmp_path: Path) -> Workspace:
    """A private copy (tests move aliases and write logs) with a materialized store."""
    source, _ = fraud_run
    root = tmp_path / "ws"
    shutil.copytree(source.settings.workspace, root)
    ws = make_workspace(root)
    uc = get_use_case("fraud")
    materialize(ws.lake, open_store(None, ws.settings.workspace, uc.name), uc)
    return ws
