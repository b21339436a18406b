"""Streaming inference from a real Redis stream: exactly once through SIGKILLs.

The consumer runs as a real process (`aistack stream`); a failpoint makes it
SIGKILL itself between scoring and the Delta commit, then between the commit and
the acknowledgement. After restarts every event is in the prediction log exactly
once, every prediction is published once, and the served features match their
offline values.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import httpx
import orjson
import pyarrow.compute as pc
import pytest
import redis

from aistack.contract import get_use_case
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.monitoring.consistency import check_consistency
from aistack.serving.stream import replay, stream_names
from servers import free_port, redis_server

REPLAY_DAYS = 9


def consume(ws, url: str, *, name: str, failpoint: str | None = None, batch: int = 300):
    env = {**os.environ, "AISTACK_ONLINE_URL": url}
    env.pop("AISTACK_STREAM_FAILPOINT", None)
    if failpoint:
        env["AISTACK_STREAM_FAILPOINT"] = failpoint
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aistack",
            "stream",
            "fraud",
            "-w",
            str(ws.settings.workspace),
            "--consumer",
            name,
            "--batch",
            str(batch),
            "--until-idle",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def streamed(served_workspace, tmp_path):
    ws = served_workspace
    uc = get_use_case("fraud")
    with redis_server(tmp_path) as (url, _):
        last = pc.max(ws.lake.read("silver.transactions").column("tx_datetime")).as_py()
        end = datetime.combine(last.date(), datetime.min.time()) + timedelta(days=1)
        start = end - timedelta(days=REPLAY_DAYS)
        events = open_event_state(url, ws.settings.workspace, uc.name)
        for view in uc.aggregation_views:
            bootstrap(
                ws.lake, events, uc, view, as_of=start - timedelta(microseconds=1)
            )
        pushed = replay(ws.lake, uc, url, start=start, end=end)
        assert pushed.events > 1000 and pushed.labels > 0
        yield ws, uc, url, pushed


def test_killed_consumers_leave_every_event_scored_exactly_once(streamed) -> None:
    ws, uc, url, pushed = streamed
    for failpoint in ("after_state:2", "after_commit:3"):
        proc = consume(ws, url, name="c1", failpoint=failpoint)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == -9, out  # SIGKILL, as a kill -9 would
    proc = consume(ws, url, name="c1")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    log = ws.lake.read("ops.fraud_prediction_log").to_pandas()
    log = log[log["route"].str.startswith("stream")]
    assert len(log) == pushed.events
    assert log["event_id"].is_unique and log["stream_id"].is_unique
    client = redis.Redis.from_url(url)
    names = stream_names("fraud")
    assert client.xlen(names["predictions"]) == pushed.events
    assert client.xpending(names["events"], names["group"])["pending"] == 0
    report = check_consistency(ws.lake, uc)
    table = report.frame()
    assert report.compared == pushed.events
    assert table["mismatch_rate"].max() == 0.0, table.to_string()


@pytest.mark.slow  # the exactly-once test above already runs two consumers
def test_consumers_in_one_group_share_the_load(streamed) -> None:
    ws, _, url, pushed = streamed
    procs = [consume(ws, url, name=n, batch=100) for n in ("a", "b")]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    log = ws.lake.read("ops.fraud_prediction_log").to_pandas()
    counts = log["route"].value_counts()
    assert counts.get("stream:a", 0) > 0 and counts.get("stream:b", 0) > 0
    assert len(log) == pushed.events and log["event_id"].is_unique


@pytest.mark.slow  # suite budget; exactly-once (above) stays in the default run
def test_metrics_and_dead_letters(streamed) -> None:
    ws, _, url, pushed = streamed
    names = stream_names("fraud")
    client = redis.Redis.from_url(url)
    bad = {"customer_id": -1, "terminal_id": 2, "tx_amount": 1.0}  # no time, bad id
    client.xadd(names["events"], {"kind": "event", "data": orjson.dumps(bad)})
    port = free_port()
    env = {**os.environ, "AISTACK_ONLINE_URL": url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aistack",
            "stream",
            "fraud",
            "-w",
            str(ws.settings.workspace),
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        text = ""
        while f"aistack_stream_events_total {pushed.events}.0" not in text:
            assert time.monotonic() < deadline and proc.poll() is None, text
            time.sleep(1)
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "aistack_stream_invalid_total 1.0" in text
        assert "aistack_stream_event_to_prediction_seconds_count" in text
        assert "aistack_stream_consumer_lag" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    dead = client.xrange(names["dead"])
    assert len(dead) == 1
    reason = dead[0][1][b"reason"].decode()
    assert "customer_id" in reason and "tx_datetime" in reason
