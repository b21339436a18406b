"""The stage runner: killed mid-run, a re-run completes with every invariant intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from aistack.lake.delta import Lake
from aistack.lake.silver import ACCOUNTING

ARGS = ["--customers", "1500", "--terminals", "3000", "--days", "90", "--bad-rows", "3"]


def aistack_run(workspace: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aistack",
            "run",
            "fraud",
            *ARGS,
            "-q",
            "-w",
            str(workspace),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_invariants(lake: Lake) -> None:
    accounting = pl.from_arrow(lake.read(ACCOUNTING)).filter(
        pl.col("table") == "silver.transactions"
    )
    assert accounting.get_column("_batch_id").is_unique().all()
    bronze = lake.rows("bronze.transactions")
    assert accounting.get_column("bronze_rows").sum() == bronze
    assert (
        lake.rows("silver.transactions") + lake.rows("quarantine.transactions")
        == bronze
    )
    silver_ids = pl.from_arrow(
        lake.read("silver.transactions", columns=["transaction_id"])
    )
    assert silver_ids.get_column("transaction_id").is_unique().all()


@pytest.mark.parametrize(
    "kill_after",
    [  # early (ingest/silver) in the default run; later stages with -m slow
        1.5,
        pytest.param(4.0, marks=pytest.mark.slow),
        pytest.param(7.0, marks=pytest.mark.slow),
    ],
)
def test_killed_run_then_rerun_completes(tmp_path: Path, kill_after: float) -> None:
    workspace = tmp_path / "ws"
    proc = aistack_run(workspace)
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lake = Lake(workspace / "tables")
    for table in lake.tables():  # every table is readable at its current version
        assert lake.read(table.name).num_rows == table.rows
    rerun = aistack_run(workspace)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "champion: fraud version" in out
    check_invariants(lake)
    assert lake.rows("quarantine.transactions") == 3 * 6
    before = {t.name: (t.version, t.rows) for t in lake.tables()}
    again = aistack_run(workspace)
    again.communicate(timeout=300)
    assert {t.name: (t.version, t.rows) for t in lake.tables()} == before
