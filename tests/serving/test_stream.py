"""Streaming inference from a real Redis stream: exactly once through SIGKILLs.

The consumer runs as a real process (`aistack stream`); a failpoint makes it
SIGKILL itself between scoring and the Delta commit, then between the commit and
the acknowledgement. After restarts every event is in the prediction log exactly
once, every prediction is published once, and the served features match their
offline values.
"""

from __future__ import annotations

import contextlib
import getpass
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
from aistack.errors import ConfigError
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.governance.audit import audit_path, verify
from aistack.governance.audit import read as read_audit
from aistack.monitoring.consistency import check_consistency
from aistack.monitoring.trace import trace
from aistack.serving.stream import (
    RedisStreamSource,
    partition_key,
    replay,
    stream_names,
)
from servers import free_port, redis_server

REPLAY_DAYS = 9


def consume(
    ws,
    url: str,
    *,
    name: str,
    failpoint: str | None = None,
    batch: int = 300,
    partition: tuple[int, int] = (0, 1),
):
    env = {
        **os.environ,
        "AISTACK_ONLINE_URL": url,
        "AISTACK_STREAM_PARTITIONS": str(partition[1]),
    }
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
            "--partition",
            str(partition[0]),
            "--until-idle",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def pushed_stream(ws, tmp_path, *, partitions: int = 1):
    """Redis with the state bootstrapped before the last days, and those days'
    events and labels pushed into the stream's partitions."""
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
        pushed = replay(ws.lake, uc, url, start=start, end=end, partitions=partitions)
        assert pushed.events > 1000 and pushed.labels > 0
        yield ws, uc, url, pushed


@pytest.fixture
def streamed(served_workspace, tmp_path):
    with pushed_stream(served_workspace, tmp_path) as found:
        yield found


def test_killed_consumers_leave_every_event_scored_exactly_once(
    streamed, monkeypatch
) -> None:
    ws, uc, url, pushed = streamed
    key = os.urandom(32)
    monkeypatch.setenv("AISTACK_AUDIT_KEY", key.hex())  # the consumers sign
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
    # every prediction audited at least once (a batch killed before its commit
    # is scored, and audited, again), signed, without the payload
    audited = [
        r
        for r in read_audit(audit_path(ws.settings))
        if r["action"] == "predict" and r["details"]["route"] == "stream:c1"
    ]
    assert {r["details"]["stream_id"] for r in audited} == set(log["stream_id"])
    assert len(audited) >= pushed.events
    by_stream = {r["details"]["stream_id"]: r for r in audited}
    for row in log.itertuples():
        record = by_stream[row.stream_id]
        assert record["principal"] == getpass.getuser()
        assert record["details"]["use_case"] == "fraud"
        assert record["details"]["model_version"] == row.model_version
        assert record["details"]["request_id"] == row.request_id
    assert b"tx_amount" not in audit_path(ws.settings).read_bytes()
    found = verify(audit_path(ws.settings), key=key)
    assert found.broken is None and found.seals >= 3, found
    # a streamed prediction traces like a served one: model, run, inputs, who
    row = log.iloc[0]
    traced = trace(ws, row["request_id"])
    assert (traced.use_case, traced.model_version) == ("fraud", row["model_version"])
    assert traced.requested_by == getpass.getuser()
    assert traced.run_id is not None and "silver.transactions" in str(traced.inputs)


@pytest.mark.timeout(900)
@pytest.mark.slow  # ~4 min on 2 busy cores; exactly-once (above) stays in default
def test_partitioned_consumers_share_the_load_with_exact_features(
    served_workspace, tmp_path
) -> None:
    """Two consumers, one per partition, run at once: each customer's events are
    all scored by one of them, and every served feature equals its offline value
    (customer windows need the entity's earlier events committed first; terminal
    windows, shifted 7 days, need the other partition's)."""
    with pushed_stream(served_workspace, tmp_path, partitions=2) as pushed:
        ws, uc, url, events = pushed
        procs = [
            consume(ws, url, name=n, batch=100, partition=(p, 2))
            for p, n in enumerate(("a", "b"))
        ]
        client = redis.Redis.from_url(url)
        lease = stream_names("fraud", 0, 2)["lease"]
        deadline = time.monotonic() + 400  # starting takes minutes on busy cores
        while client.get(lease) != b"a":  # then a third consumer of partition 0
            assert time.monotonic() < deadline and procs[0].poll() is None
            time.sleep(0.1)
        standby = consume(ws, url, name="c", batch=100, partition=(0, 2))
        for proc in procs:
            out, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, out
        out, _ = standby.communicate(timeout=300)
        assert "partition 0 is held by a: standing by" in out, out
        log = ws.lake.read("ops.fraud_prediction_log").to_pandas()
        log = log[log["route"].str.startswith("stream")]
        assert len(log) == events.events and log["event_id"].is_unique
        assert log["stream_id"].is_unique  # ids of two partitions' streams can clash
        customers = log["payload"].map(lambda p: orjson.loads(p)["customer_id"])
        routes = log.groupby(customers)["route"].nunique()
        assert routes.max() == 1  # one consumer per customer
        counts = log["route"].value_counts()
        assert counts.get("stream:a", 0) > 0 and counts.get("stream:b", 0) > 0
        report = check_consistency(ws.lake, uc)
        table = report.frame()
        assert report.compared == events.events
        assert table["mismatch_rate"].max() == 0.0, table.to_string()


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


def test_partitions_are_recorded_and_held_by_one_consumer(tmp_path) -> None:
    assert partition_key(get_use_case("fraud")) == "customer_id"  # terminals: shifted
    with redis_server(tmp_path) as (url, _):
        a = RedisStreamSource(url, "fraud", consumer="a", partition=0, partitions=2)
        with pytest.raises(ConfigError, match="stream_partitions: 3, but the streams"):
            RedisStreamSource(url, "fraud", consumer="b", partition=0, partitions=3)
        b = RedisStreamSource(url, "fraud", consumer="b", partition=0, partitions=2)
        assert a.acquire() is None and b.acquire() == "a"
        with pytest.raises(ConfigError, match="partition 0: the lease was taken by a"):
            b.read(1, 1)
        assert a.read(1, 1) == []  # the holder renews and reads
