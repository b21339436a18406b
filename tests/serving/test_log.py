"""The prediction log never loses an acknowledged prediction: a SIGKILL before
the flush, a full disk under the table, a full disk under the write-ahead log;
a flush commits exactly the records queued."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest

from aistack.lake.delta import Lake
from aistack.serving.log import (
    LogFlusher,
    PredictionLog,
    log_records,
    log_schema,
    log_table,
)
from aistack.serving.requests import Scored
from servers import aistack_server

GOOD = {"customer_id": 1, "terminal_id": 2, "tx_amount": 10.0}
TABLE = "ops.fraud_prediction_log"


def _send(base: str, first: int, n: int) -> list[int]:
    """Requests with ids first..first+n-1; the statuses."""
    with httpx.Client(base_url=base, timeout=30) as client:
        return [
            client.post(
                "/v1/fraud/predict",
                json={
                    **GOOD,
                    "transaction_id": first + i,
                    "tx_datetime": f"2018-06-01T{(first + i) // 3600 % 24:02d}:"
                    f"{(first + i) // 60 % 60:02d}:{(first + i) % 60:02d}",
                },
            ).status_code
            for i in range(n)
        ]


def _logged_ids(root: Path) -> list[str]:
    lake = Lake(root / "tables")
    if not lake.exists(TABLE):
        return []
    return lake.read(TABLE, columns=["request_id"]).column("request_id").to_pylist()


@contextlib.contextmanager
def tiny_tmpfs(path: Path, *, free_kb: int) -> Iterator[Path]:
    """A real file system at `path` with about `free_kb` left (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        filler = path / ".filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            handle.write(b"\0" * (2048 - free_kb) * 1024)
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_sigkill_before_the_flush_loses_no_acknowledged_prediction(
    served_workspace,
) -> None:
    root = served_workspace.settings.workspace
    env = {"AISTACK_LOG_FLUSH_SECONDS": "3600"}  # nothing flushes on its own
    with aistack_server(root, env=env) as (base, proc):
        assert _send(base, 1_000_000, 40) == [200] * 40
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _logged_ids(root) == []  # nothing reached the table...
    assert list((root / "wal").rglob("*.jsonl"))  # ...it is all written ahead
    with aistack_server(root, env=env):  # the next start replays it
        pass
    ids = _logged_ids(root)
    assert sorted(ids) == sorted(str(1_000_000 + i) for i in range(40))
    assert not list((root / "wal").rglob("*.jsonl"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_under_the_table_delays_the_log_and_loses_nothing(
    served_workspace,
) -> None:
    root = served_workspace.settings.workspace
    ops = root / "tables" / "ops"
    shutil.rmtree(ops / "fraud_prediction_log", ignore_errors=True)
    env = {"AISTACK_LOG_FLUSH_SECONDS": "0.2"}
    with (
        tiny_tmpfs(ops, free_kb=4) as filler,
        aistack_server(root, env=env) as (base, _),
    ):
        assert _send(base, 2_000_000, 60) == [200] * 60  # acknowledged
        time.sleep(1.0)  # several flushes fail: no space
        assert len(_logged_ids(root)) < 60
        filler.unlink()  # space again: the next flush writes everything
        deadline = time.monotonic() + 30
        while len(_logged_ids(root)) < 60 and time.monotonic() < deadline:
            time.sleep(0.3)
        ids = _logged_ids(root)
        assert sorted(ids) == sorted(str(2_000_000 + i) for i in range(60))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_under_the_write_ahead_log_answers_503(served_workspace) -> None:
    root = served_workspace.settings.workspace
    env = {"AISTACK_LOG_FLUSH_SECONDS": "3600"}
    with tiny_tmpfs(root / "wal", free_kb=64) as filler:
        with aistack_server(root, env=env) as (base, _):
            statuses = _send(base, 3_000_000, 400)
            filler.unlink()
            assert 503 in statuses  # refused, not acknowledged and lost
            accepted = [3_000_000 + i for i, s in enumerate(statuses) if s == 200]
            assert accepted
            refused = httpx.post(
                f"{base}/v1/fraud/predict",
                json={
                    **GOOD,
                    "transaction_id": 1,
                    "tx_datetime": "2018-06-02T00:00:00",
                },
            )
            assert refused.status_code in (200, 503)
        ids = set(_logged_ids(root))  # flushed at SIGTERM
        assert {str(i) for i in accepted} <= ids


def _scored(i: int) -> Scored:
    """A scored request with unknown features, a missing time and a late view."""
    return Scored(
        str(i),
        i / 7,
        i % 2 == 0,
        "fraud",
        3,
        {"view": 1.5},
        ["customer"] if i % 3 else [],
        {"f1": float(i), "f2": None if i % 4 == 0 else -i / 3},
        event_id=str(i),
        event_time=None if i % 5 == 0 else datetime(2018, 5, 1, 12, 0, i % 60, i),
        late=["view"] if i % 7 == 0 else [],
    )


@pytest.mark.parametrize("write_ahead", [True, False])
def test_a_flush_commits_exactly_the_queued_records(tmp_path, write_ahead) -> None:
    records = log_records(
        [_scored(i) for i in range(300)],
        [{"transaction_id": i, "note": "é" * (i % 3)} for i in range(300)],
        route="predict",
        online_versions={"fraud.customer_spending": 4},
    )
    # the second flush holds a line longer than a block of Arrow's JSON
    # reader: that flush is decoded in Python instead
    records[200]["payload"] = "x" * (2 << 20)
    lake = Lake(tmp_path / "tables")
    log = PredictionLog(
        lake,
        TABLE,
        flush_seconds=3600,
        feature_names=("f1", "f2"),
        wal_dir=tmp_path / "wal" if write_ahead else None,
    )
    log.start()
    for first in range(0, 300, 30):
        log.append_records(records[first : first + 30])
        if first == 120:
            assert log.flush() == 150
    assert log.flush() == 150
    log.append_records(records[:1])
    log.close()  # the last one, at close
    stored = lake.read(TABLE).sort_by([("request_id", "ascending")])
    want = log_table([*records, records[0]], log_schema(("f1", "f2")))
    assert stored.equals(want.sort_by([("request_id", "ascending")]))
    assert not list((tmp_path / "wal").rglob("*.jsonl"))


def _records(first: int, n: int) -> list[dict]:
    return log_records(
        [_scored(i) for i in range(first, first + n)],
        [{"transaction_id": i} for i in range(first, first + n)],
        route="predict",
        online_versions={},
    )


def test_workers_hand_off_segments_and_the_flusher_commits_each_row_once(
    tmp_path,
) -> None:
    # two workers' logs (each its own locked segment) and the supervisor's
    # flusher, on one folder, as a multi-worker server runs them
    lake, wal = Lake(tmp_path / "tables"), tmp_path / "wal"
    schema = log_schema(("f1", "f2"))
    workers = [
        PredictionLog(
            lake,
            TABLE,
            flush_seconds=3600,
            feature_names=("f1", "f2"),
            wal_dir=wal,
            handoff=True,
        )
        for _ in range(2)
    ]
    flusher = LogFlusher(lake, TABLE, wal, schema, flush_seconds=3600)
    for log in workers:
        log.start()
    records = _records(0, 100)
    workers[0].append_records(records[:50])
    workers[1].append_records(records[50:80])
    assert flusher.flush() == 0  # nothing handed off yet: live segments untouched
    assert not lake.exists(TABLE)
    assert workers[0].flush() == 50  # handed off, not written
    assert not lake.exists(TABLE)
    assert sorted(p.suffix for p in wal.iterdir()) == [".jsonl", ".jsonl", ".ready"]
    assert flusher.flush() == 50
    workers[1].append_records(records[80:])
    for log in workers:
        log.close()  # hands off what is left, removes its empty segment
    assert flusher.flush() == 50
    assert list(wal.iterdir()) == []
    stored = lake.read(TABLE).sort_by([("request_id", "ascending")])
    want = log_table(records, schema).sort_by([("request_id", "ascending")])
    assert stored.equals(want)


def test_the_flusher_recovers_a_killed_workers_segment_and_its_own_failed_commit(
    tmp_path,
) -> None:
    lake, wal = Lake(tmp_path / "tables"), tmp_path / "wal"
    schema = log_schema(("f1", "f2"))
    flusher = LogFlusher(lake, TABLE, wal, schema, flush_seconds=3600)
    wal.mkdir()
    lines = [orjson.dumps(r, default=str) + b"\n" for r in _records(0, 30)]
    # a killed worker's segment (nobody holds it), its last line torn
    (wal / "1-dead.jsonl").write_bytes(b"".join(lines[:10]) + lines[10][:25])
    # a flusher died after committing rows 10-19 and before deleting them
    flusher._write(log_table(_records(10, 10), schema))
    (wal / "2-taken.committing").write_bytes(b"".join(lines[10:25]))
    assert flusher.flush() == 15  # 0-9 and 20-24: nothing twice
    assert list(wal.iterdir()) == []
    ids = lake.read(TABLE, columns=["request_id"]).column("request_id").to_pylist()
    assert sorted(ids, key=int) == [str(i) for i in range(25)]
