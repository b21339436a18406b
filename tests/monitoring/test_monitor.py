"""Monitoring end to end: replay transactions through a real server, then monitor.

Labels arrive later (they are in silver, joined by transaction id); the monitor
computes drift against the champion's training rows, daily performance, alerts
and the HTML report; the A/B command compares the canary arms.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aistack.contract import get_use_case
from aistack.monitoring.alerts import alerts_table
from aistack.monitoring.monitor import prediction_frame, run_monitor
from aistack.registry.rollout import start_rollout
from broken_models import register
from servers import aistack_server


@pytest.fixture
def replayed(served_workspace):
    """The last 3 weeks of transactions sent as requests, half of them to a canary."""
    ws = served_workspace
    register_version = register(ws, "same")
    start_rollout(
        ws.registry,
        "fraud",
        mode="canary",
        share=50,
        version=register_version,
        actor="t",
    )
    silver = ws.lake.read("silver.transactions").to_pandas()
    cutoff = silver["tx_datetime"].max() - timedelta(days=21)
    recent = silver[silver["tx_datetime"] >= cutoff].head(1600)
    rows = [
        {
            "transaction_id": int(r.transaction_id),
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "tx_amount": float(r.tx_amount),
            "tx_datetime": r.tx_datetime.isoformat(),
        }
        for r in recent.itertuples()
    ]
    with aistack_server(ws.settings.workspace) as (base, _):
        for start in range(0, len(rows), 200):
            r = httpx.post(
                f"{base}/v1/fraud/predict/batch",
                json={"rows": rows[start : start + 200]},
            )
            assert r.status_code == 200
    return ws, len(rows)


def test_monitor_tests_drift_measures_performance_and_writes_the_report(
    replayed, tmp_path
) -> None:
    ws, sent = replayed
    uc = get_use_case("fraud")
    result = run_monitor(ws, uc, window=None, report_path=tmp_path / "report.html")
    assert result.current_rows == sent
    assert {d.column for d in result.drift} == {*uc.feature_names, "score"}
    assert result.reference_rows > 1000
    assert not result.performance.empty
    assert set(result.performance.columns) >= {"day", "roc_auc", "average_precision"}
    assert result.performance["n"].sum() > 0
    assert "average_precision" in result.training_metrics
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 2 and "http://" not in html
    assert all(d.test != "not_enough_data" for d in result.drift)  # 1,600 rows
    # the declared rule (drift share > 0.3) fires exactly when its condition holds
    fired = [a for a in result.alerts if a.signal == "drift_share"]
    assert bool(fired) == (result.drift_share > 0.3)
    assert all(a.state == "firing" for a in fired)
    if fired:  # and recorded where every process reads alert states
        assert ws.lake.exists(alerts_table("fraud"))
    # a window reads only its rows (filtered while scanning the log)
    now = datetime.now(UTC)
    assert len(prediction_frame(ws, uc, since=now - timedelta(hours=1))) == sent
    assert prediction_frame(ws, uc, since=now + timedelta(minutes=1)).empty


@pytest.mark.slow  # its own replay; run_monitor is tested in the default run
def test_cli_monitor_and_abtest(replayed, tmp_path) -> None:
    ws, _ = replayed
    run = [sys.executable, "-m", "aistack"]
    env_ws = ["-w", str(ws.settings.workspace)]
    monitor = subprocess.run(
        [*run, "monitor", "fraud", *env_ws, "--report", str(tmp_path / "m.html")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
    )
    assert monitor.returncode == 0, monitor.stderr
    assert "columns drifted" in monitor.stdout
    assert (tmp_path / "m.html").exists()
    ab = subprocess.run(
        [*run, "abtest", "fraud", *env_ws],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
    )
    assert ab.returncode == 0, ab.stderr
    text = " ".join(ab.stdout.split())
    assert "A/B: fraud_caught (two-proportion z-test)" in text
    assert "rows needed per arm" in text
