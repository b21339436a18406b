"""Retention on a real Delta table and through `aistack vacuum`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from aistack.governance.audit import audit_path, read, verify
from aistack.governance.retention import expire, kind_of
from aistack.lake.delta import Lake

TABLE = "ops.demo_prediction_log"


def write_log(lake: Lake, ages_days: list[float]) -> None:
    now = datetime.now(UTC)
    for i, age in enumerate(ages_days):  # one file per row: small files to compact
        row = pa.table(
            {
                "request_id": [str(i)],
                "logged_at": pa.array(
                    [now - timedelta(days=age)], pa.timestamp("us", tz="UTC")
                ),
            }
        )
        lake.write(TABLE, row, mode="append")


def test_expire_deletes_old_rows_and_compacts(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "tables")
    write_log(lake, [40, 35, 1, 0.5, 0.1])
    files_before = len(list(lake.path(TABLE).glob("*.parquet")))
    done = expire(lake, TABLE, days=30, now=datetime.now(UTC))
    assert kind_of(TABLE) == "prediction_log" and kind_of("silver.x") is None
    assert done.deleted_rows == 2
    kept = sorted(lake.read(TABLE).column("request_id").to_pylist())
    assert kept == ["2", "3", "4"]
    assert done.compacted_files >= 2
    assert files_before == 5


def test_vacuum_command_enforces_declared_retention(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_log(Lake(ws / "tables"), [10, 0.1])
    env = {
        **os.environ,
        "AISTACK_WORKSPACE": str(ws),
        "AISTACK_RETENTION_DAYS": '{"prediction_log": 5, "audit": 30}',
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "aistack", "vacuum"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert TABLE in done.stdout
    assert Lake(ws / "tables").read(TABLE).column("request_id").to_pylist() == ["1"]
    records = list(read(audit_path(ws)))
    assert [(r["action"], r["details"]["deleted_rows"]) for r in records] == [
        ("vacuum", 1)
    ]
    assert verify(audit_path(ws)).checked == 1
    assert verify(audit_path(ws)).broken is None
    bad = subprocess.run(
        [sys.executable, "-m", "aistack", "vacuum"],
        env={**env, "AISTACK_RETENTION_DAYS": '{"logs": 5}'},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert bad.returncode == 2 and "retention_days.logs" in bad.stderr
