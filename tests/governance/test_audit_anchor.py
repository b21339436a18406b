"""The audit anchor: every append records the log's last record (number and
hash) in a file outside the workspace, so `verify` finds what a chain and its
seals cannot: records cut from the end, or the whole log replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from aistack.errors import ConfigError
from aistack.governance.audit import (
    AuditBuffer,
    AuditLog,
    audit_event,
    audit_log,
    audit_path,
    entry,
    prune,
    read_anchor,
    verify,
)
from aistack.settings import load_settings
from governance.test_access import aistack
from governance.test_audit_signing import KEY


def anchored_log(
    tmp_path: Path, records: int = 5, key: bytes | None = None
) -> AuditLog:
    log = AuditLog(audit_path(tmp_path / "ws"), key, tmp_path / "elsewhere" / "head")
    for i in range(records):
        audit_event(log, "ana", "promote", use_case="uc", version=i)
    return log


def test_each_append_moves_the_anchor_to_the_last_record(tmp_path: Path) -> None:
    log = anchored_log(tmp_path, key=KEY)
    lines = log.path.read_bytes().splitlines()
    head = read_anchor(log.anchor)
    assert head is not None and head.seq == len(lines) == 10  # 5 records, 5 seals
    assert head.hash == lines[-1][:64].decode()
    assert verify(log.path, key=KEY, anchor=log.anchor).broken is None


@pytest.mark.parametrize("cut", [1, 2, 4])
def test_records_cut_from_the_end_are_found_only_with_the_anchor(
    tmp_path: Path, cut: int
) -> None:
    log = anchored_log(tmp_path)
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:-cut]))
    assert verify(log.path).broken is None  # the chain alone cannot tell
    found = verify(log.path, anchor=log.anchor)
    assert found.broken is not None
    what = "record 5" if cut == 1 else f"records {6 - cut}-5"
    assert f"{what} cut from the end" in found.broken.reason
    assert f"the log ends at record {5 - cut}" in found.broken.reason


def test_a_log_replaced_by_another_chain_is_found(tmp_path: Path) -> None:
    log = anchored_log(tmp_path)
    other = anchored_log(tmp_path / "other", records=7)
    log.path.write_bytes(other.path.read_bytes())  # longer, consistent, not ours
    found = verify(log.path, anchor=log.anchor)
    assert found.broken is not None and found.broken.line == 5
    assert "record 5 is not the one the anchor names" in found.broken.reason
    log.path.unlink()
    gone = verify(log.path, anchor=log.anchor)
    assert gone.broken is not None and "the log is gone" in gone.broken.reason


def test_a_buffer_and_a_prune_keep_the_anchor_true(tmp_path: Path) -> None:
    log = anchored_log(tmp_path, key=KEY)
    buffer = AuditBuffer(log.path, flush_seconds=3600, key=KEY, anchor=log.anchor)
    buffer.start()
    buffer.record([entry("svc", "predict", {"request_id": str(i)}) for i in range(3)])
    buffer.close()
    head = read_anchor(log.anchor)
    assert head is not None and head.seq == 10 + 3 + 1
    assert verify(log.path, key=KEY, anchor=log.anchor).broken is None
    # every record pruned: the checkpoint still names the anchored record
    later = datetime.now(UTC) + timedelta(days=1)
    assert prune(log.path, later, principal="root", key=KEY) == 14
    assert verify(log.path, key=KEY, anchor=log.anchor).broken is None


def test_the_anchor_is_refused_inside_the_workspace_and_read_strictly(
    tmp_path: Path,
) -> None:
    settings = load_settings(workspace=tmp_path / "ws")
    inside = settings.model_copy(
        update={"audit_anchor_file": tmp_path / "ws" / "audit" / "head"}
    )
    with pytest.raises(
        ConfigError, match=r"audit_anchor_file: .* inside the workspace"
    ):
        audit_log(inside, {})
    outside = settings.model_copy(update={"audit_anchor_file": tmp_path / "head"})
    assert audit_log(outside, {}).anchor == (tmp_path / "head").resolve()
    (tmp_path / "head").write_bytes(orjson.dumps({"seq": "x"}))
    with pytest.raises(ConfigError, match=r"audit_anchor_file .*: not an audit anchor"):
        read_anchor(tmp_path / "head")


def test_cli_verify_names_a_cut_with_the_anchor_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AISTACK_AUDIT_KEY", raising=False)
    head = tmp_path / "head.json"
    env = {
        "AISTACK_WORKSPACE": str(tmp_path / "ws"),
        "AISTACK_AUDIT_ANCHOR_FILE": str(head),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = audit_log(load_settings(), {})  # the settings read from the environment
    for i in range(3):
        audit_event(log, "ana", "promote", use_case="uc", version=i)
    assert read_anchor(head) is not None and read_anchor(head).seq == 3
    assert aistack("audit", "verify", env=env).returncode == 0
    path = audit_path(tmp_path / "ws")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    refused = aistack("audit", "verify", env=env)
    assert refused.returncode == 2
    assert "cut from the end" in " ".join(refused.stderr.split())
