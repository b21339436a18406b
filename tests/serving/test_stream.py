"""Streaming inference from a real Redis stream: exactly once through SIGKILLs.

The consumer runs as a real process (`aistack stream`); a failpoint makes it
SIGKILL itself between scoring and the Delta commit, then between the commit and
the acknowledgement. After restarts every event is in the prediction log exactly
once, every prediction is published once, and the served features match their
offline values.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta

import httpx
import orjson
import pyarrow.compute as pc
import pytest
import redis

from aistack.contract import get_use_case
from aistack.errors import ConfigError, LogUnavailableError
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.governance.audit import audit_path, verify
from aistack.governance.audit import read as read_audit
from aistack.monitoring.consistency import check_consistency
from aistack.monitoring.trace import trace
from aistack.serving.inference import GC_YOUNG_THRESHOLD
from aistack.serving.stream import (
    Consumer,
    RedisStreamSource,
    _Committer,
    _spans,
    _Uncommitted,
    cross_bound_us,
    partition_key,
    replay,
    stream_names,
)
from aistack.settings import load_settings
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
    commit_interval_ms: int = 0,
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
            "--linger-ms",  # the last, partial batch of the backlog lingers
            "5",
            "--commit-interval-ms",
            str(commit_interval_ms),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def last_days(ws, days: int) -> tuple[datetime, datetime]:
    """Start and end of the last `days` whole days of the data."""
    last = pc.max(ws.lake.read("silver.transactions").column("tx_datetime")).as_py()
    end = datetime.combine(last.date(), datetime.min.time()) + timedelta(days=1)
    return end - timedelta(days=days), end


def bootstrapped(ws, url: str, days: int) -> tuple[datetime, datetime]:
    """The last `days` whole days of the data; the state in `url` as of before them."""
    uc = get_use_case("fraud")
    start, end = last_days(ws, days)
    events = open_event_state(url, ws.settings.workspace, uc.name)
    for view in uc.aggregation_views:
        bootstrap(ws.lake, events, uc, view, as_of=start - timedelta(microseconds=1))
    return start, end


@contextlib.contextmanager
def pushed_stream(ws, tmp_path, *, partitions: int = 1):
    """Redis with the state bootstrapped before the last days, and those days'
    events and labels pushed into the stream's partitions."""
    uc = get_use_case("fraud")
    with redis_server(tmp_path) as (url, _):
        start, end = bootstrapped(ws, url, REPLAY_DAYS)
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


def test_a_consumer_committing_at_intervals_publishes_first_and_logs_once(
    streamed,
) -> None:
    """--commit-interval-ms: predictions are published as their micro-batch is
    scored, the log commit and the acks follow; after kills the log still holds
    every event once with its offline features, and the output stream every
    event at least once, a repeat equal to the first."""
    ws, uc, url, pushed = streamed
    client = redis.Redis.from_url(url)
    names = stream_names("fraud")
    every = 10_000  # no commit falls due before the kills
    proc = consume(
        ws, url, name="c1", failpoint="after_state:3", commit_interval_ms=every
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, out
    # the events of two micro-batches published, none committed nor acknowledged
    early = client.xlen(names["predictions"])
    assert 0 < early < 600
    assert not ws.lake.exists("ops.fraud_prediction_log")
    assert client.xpending(names["events"], names["group"])["pending"] == 900
    # recovered messages are committed batch by batch: killed after the first
    proc = consume(
        ws, url, name="c1", failpoint="after_commit:1", commit_interval_ms=every
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, out
    assert 0 < ws.lake.read("ops.fraud_prediction_log").num_rows < 300
    proc = consume(ws, url, name="c1", commit_interval_ms=every)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    log = ws.lake.read("ops.fraud_prediction_log").to_pandas()
    assert len(log) == pushed.events
    assert log["event_id"].is_unique and log["stream_id"].is_unique
    assert client.xpending(names["events"], names["group"])["pending"] == 0
    published: dict[int, list[dict]] = {}
    for _, fields in client.xrange(names["predictions"]):
        answer = orjson.loads(fields[b"data"])
        published.setdefault(answer["event_id"], []).append(answer)
    assert set(published) == set(log["event_id"])
    repeated = [answers for answers in published.values() if len(answers) > 1]
    assert len(repeated) >= early  # published before the kill, and again
    assert all(a == answers[0] for answers in repeated for a in answers)
    report = check_consistency(ws.lake, uc)
    table = report.frame()
    assert report.compared == pushed.events
    assert table["mismatch_rate"].max() == 0.0, table.to_string()


def test_a_failed_log_commit_stops_the_committer_and_surfaces() -> None:
    written: list[int] = []

    def write(batch: _Uncommitted) -> None:
        if batch.number == 2:
            raise OSError("No space left on device")
        written.append(batch.number)

    committer = _Committer(write)
    try:
        for number in (1, 2, 3):
            with contextlib.suppress(LogUnavailableError):
                committer.submit(_Uncommitted(number=number))
        with pytest.raises(
            LogUnavailableError,
            match="prediction log commit failed: No space left on device",
        ):
            committer.wait()
    finally:
        committer.close()
    assert written == [1]  # nothing after the failed one: left pending
    assert isinstance(committer.error, OSError)


@pytest.mark.timeout(900)
@pytest.mark.slow  # ~4 min on 2 busy cores; exactly-once (above) stays in default
def test_partitioned_consumers_share_the_load_with_exact_features(
    served_workspace, tmp_path
) -> None:
    """Two consumers, one per partition: each customer's events are all scored
    by one of them, and every served feature equals its offline value (customer
    windows need the entity's earlier events committed first; terminal windows,
    shifted 7 days, need the other partition's). Partition 0 first stands at
    the replay's start while the consumer of partition 1 runs alone: it goes
    ahead by the terminals' allowed lateness (1 day) only, not by their shift,
    or the terminal windows it writes would be pruned of events that partition
    0's earlier ones still count."""
    with pushed_stream(served_workspace, tmp_path, partitions=2) as pushed:
        ws, uc, url, events = pushed
        client = redis.Redis.from_url(url)
        names = stream_names("fraud", 0, 2)
        start, _ = last_days(ws, REPLAY_DAYS)
        epoch = datetime(1970, 1, 1)
        client.hset(
            names["progress"], "0", (start - epoch) // timedelta(microseconds=1)
        )
        ahead = consume(ws, url, name="b", batch=100, partition=(1, 2))
        deadline = time.monotonic() + 400  # starting takes minutes on busy cores
        progress, still = None, 0
        while still < 3:  # until partition 1 waits for partition 0
            assert time.monotonic() < deadline and ahead.poll() is None
            time.sleep(1)
            now = client.hget(names["progress"], "1")
            still = still + 1 if now is not None and now == progress else 0
            progress = now
        assert progress is not None
        reached = epoch + timedelta(microseconds=int(progress))
        assert timedelta(0) < reached - start < timedelta(days=2)  # 1 day + a batch
        # partition 0 publishes first and commits every 200 ms (its acks, which
        # end its backlog, come later than its progress)
        procs = [
            consume(
                ws, url, name="a", batch=100, partition=(0, 2), commit_interval_ms=200
            ),
            ahead,
        ]
        while client.get(names["lease"]) != b"a":  # then a third consumer of 0
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


def test_a_partition_runs_ahead_by_the_lateness_scoring_in_spans_below_it() -> None:
    day_us = 86_400 * 10**6
    fraud = get_use_case("fraud")  # terminals: shifted 7 days, 1 day late allowed
    assert cross_bound_us(fraud, "customer_id") == day_us
    assert cross_bound_us(fraud, "terminal_id") == 10**6  # customers: no shift
    assert _spans([0, 5, 9, 10, 3, 25], 10) == [slice(0, 3), slice(3, 5), slice(5, 6)]
    assert _spans([7, 7, 7], 1) == [slice(0, 3)]


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


def test_a_lingering_consumer_scores_what_arrives_meanwhile_in_one_batch(
    served_workspace, tmp_path
) -> None:
    ws, uc = served_workspace, get_use_case("fraud")
    with redis_server(tmp_path) as (url, _):
        start, end = bootstrapped(ws, url, 2)
        first = replay(ws.lake, uc, url, start=start, end=end - timedelta(days=1))
        consumer = Consumer(
            uc,
            load_settings(workspace=ws.settings.workspace, online_url=url),
            RedisStreamSource(url, uc.name, consumer="c"),
            "c",
            batch_size=100_000,
            linger_ms=3_000,
        )
        scored: list[int] = []
        gc.unfreeze()  # as in a fresh process (another test may have settled it)
        gc.set_threshold(700, 10, 10)
        thread = threading.Thread(
            target=lambda: scored.append(
                consumer.run(threading.Event(), until_idle=True)
            )
        )
        thread.start()
        time.sleep(0.5)  # the consumer has read the first day and lingers
        second = replay(ws.lake, uc, url, start=end - timedelta(days=1), end=end)
        thread.join(timeout=300)
    assert first.events > 0 and second.events > 0
    assert scored == [first.events + second.events]
    registry = consumer.metrics.registry
    assert registry.get_sample_value("aistack_stream_batch_seconds_count") == 1
    for name in ("event_to_prediction", "event_to_commit"):  # one per event
        count = registry.get_sample_value(f"aistack_stream_{name}_seconds_count")
        assert count == first.events + second.events
    # the champion's load settled the heap: full collections skip what it holds
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
