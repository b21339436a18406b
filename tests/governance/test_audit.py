"""The audit log: the chain verifies, and names an edited, deleted or reordered
record; pruning keeps it verifiable; written-ahead records survive a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aistack.governance.audit import (
    AuditBuffer,
    AuditDrainer,
    Verdict,
    append,
    audit_event,
    audit_path,
    entry,
    prune,
    read,
    verify,
)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    for i in range(6):
        audit_event(tmp_path, "ana", "promote", use_case="fraud", version=i)
    return audit_path(tmp_path)


def test_an_untouched_chain_verifies(log: Path) -> None:
    assert verify(log) == Verdict(6, None, signed=False, seals=0)
    assert [r["seq"] for r in read(log)] == [1, 2, 3, 4, 5, 6]
    assert [r["details"]["version"] for r in read(log)] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("offset", [-3, 70, 100])  # in the details, prev, principal
def test_one_changed_byte_breaks_the_chain_at_that_record(log: Path, offset) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[3])
    at = offset if offset >= 0 else len(line) - 1 + offset
    line[at] = ord("X") if line[at] != ord("X") else ord("Y")
    lines[3] = bytes(line)
    log.write_bytes(b"".join(lines))
    found = verify(log)
    checked, broken = found.checked, found.broken
    assert checked == 3
    assert broken is not None and broken.line == 4
    assert "edited" in broken.reason


def test_a_deleted_record_is_named(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    del lines[2]
    log.write_bytes(b"".join(lines))
    broken = verify(log).broken
    assert broken is not None
    assert str(broken) == "line 3: record 3 deleted (record 4 follows record 2)"


def test_reordered_records_are_named(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    log.write_bytes(b"".join(lines))
    broken = verify(log).broken
    assert broken is not None and broken.line == 2
    assert broken.reason == "records reordered: record 3 comes before record 2"
    lines[1], lines[2] = lines[2], lines[1]
    lines[4], lines[5] = lines[5], lines[4]  # the last two, swapped
    log.write_bytes(b"".join(lines))
    broken = verify(log).broken
    assert broken is not None and broken.line == 5
    assert broken.reason == "records reordered: record 6 comes before record 5"


def test_a_rewritten_tail_still_fails_the_next_link(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"version":5', b'"version":9')
    log.write_bytes(b"".join(lines))
    assert verify(log).broken is not None


def test_pruning_leaves_a_checkpoint_and_a_verifiable_chain(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    old = [entry("ana", "predict", {"request_id": str(i)}) for i in range(5)]
    for e in old:
        e["at"] = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    append(path, old)
    audit_event(tmp_path, "ana", "promote", version=3)
    audit_event(tmp_path, "ana", "rollback", version=2)
    assert prune(path, datetime.now(UTC) - timedelta(days=30), principal="root") == 5
    records = list(read(path))
    assert [r["action"] for r in records] == ["checkpoint", "promote", "rollback"]
    assert records[0]["seq"] == 5 and records[0]["details"]["pruned"] == 5
    assert verify(path) == Verdict(2, None, signed=False, seals=0)
    audit_event(tmp_path, "ana", "promote", version=4)  # appends continue the chain
    assert verify(path) == Verdict(3, None, signed=False, seals=0)
    lines = path.read_bytes().splitlines(keepends=True)
    log_without_first_kept = lines[0] + b"".join(lines[2:])
    path.write_bytes(log_without_first_kept)
    broken = verify(path).broken
    assert broken is not None and "record 6 deleted" in broken.reason


def test_written_ahead_predictions_survive_a_kill(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from aistack.governance.audit import AuditBuffer, entry
        buf = AuditBuffer(Path({str(path)!r}), flush_seconds=3600)
        buf.start()
        for i in range(50):
            buf.record([entry("svc", "predict", {{"request_id": str(i)}})])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False)
    assert done.returncode == -signal.SIGKILL
    assert not path.exists() or not list(read(path))  # nothing chained yet
    buffer = AuditBuffer(path, flush_seconds=3600)
    buffer.start()  # adopts the dead process's segment
    buffer.record([entry("svc", "predict", {"request_id": "late"})])
    buffer.close()
    ids = [r["details"]["request_id"] for r in read(path)]
    assert ids == [*map(str, range(50)), "late"]
    assert verify(path) == Verdict(51, None, signed=False, seals=0)
    assert list((path.parent / "wal").glob("*.jsonl")) == []


def test_workers_hand_off_records_and_the_drainer_chains_each_once(
    tmp_path: Path,
) -> None:
    path = audit_path(tmp_path)
    key = b"k" * 32
    workers = [
        AuditBuffer(path, flush_seconds=3600, key=key, handoff=True) for _ in range(2)
    ]
    drainer = AuditDrainer(path, flush_seconds=3600, key=key)
    for buffer in workers:
        buffer.start()
    for i in range(30):
        workers[i % 2].record([entry("svc", "predict", {"request_id": str(i)})])
    drainer.drain()  # the live segments are the workers': left alone
    assert not path.exists() or not list(read(path))
    workers[0].flush()  # released, not chained, by the worker
    assert not path.exists() or not list(read(path))
    drainer.drain()
    assert _predicted(path) == list(range(0, 30, 2))
    workers[0].flush()  # nothing new: its empty segment is removed, not chained
    for buffer in workers:
        buffer.close()
    drainer.close()
    assert _predicted(path) == list(range(30))
    verdict = verify(path, key=key)  # 30 records and a seal per drain that chained
    assert (verdict.checked, verdict.broken, verdict.seals) == (32, None, 2)
    assert list((path.parent / "wal").iterdir()) == []


def _predicted(path: Path) -> list[int]:
    return sorted(
        int(r["details"]["request_id"]) for r in read(path) if r["action"] == "predict"
    )
