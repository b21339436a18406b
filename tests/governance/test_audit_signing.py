"""Signed audit seals: a chain rewritten end to end without the key (every hash
recomputed) fails `verify` at the first seal after the change; a log without
seals, or with a forged prune checkpoint, fails too; no key: `verify` says
plainly that the log is unsigned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from aistack.errors import ConfigError
from aistack.governance.audit import (
    GENESIS,
    AuditBuffer,
    AuditLog,
    Verdict,
    append,
    audit_event,
    audit_log,
    audit_path,
    chain_lines,
    entry,
    prune,
    read,
    verify,
)
from aistack.governance.keys import new_key_file
from aistack.settings import load_settings
from governance.test_access import aistack

KEY = bytes.fromhex("11" * 32)


def signed_log(folder: Path, records: int = 6) -> Path:
    log = AuditLog(audit_path(folder), KEY)
    for i in range(records):
        audit_event(log, "ana", "promote", use_case="fraud", version=i)
    return log.path


def rewrite(path: Path, change, *, drop_seals: bool = False, key=None) -> None:
    """Rewrite the whole chain as an attacker with write access would: edit the
    records with `change`, then recompute every hash and link from the start."""
    entries = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line[65:])
        del record["prev"], record["seq"]
        if drop_seals and record["action"] == "seal":
            continue
        entries.append(change(record))
    path.write_bytes(b"".join(chain_lines(entries, GENESIS, 0, key=key)))


def to_version(n: int):
    def change(record: dict) -> dict:
        if record["details"].get("version") == 2:
            record["details"]["version"] = n
        return record

    return change


def test_every_append_is_sealed_and_the_seals_verify(tmp_path: Path) -> None:
    path = signed_log(tmp_path)
    actions = [r["action"] for r in read(path)]
    assert actions == ["promote", "seal"] * 6
    assert verify(path, key=KEY) == Verdict(12, None, signed=True, seals=6)
    assert verify(path) == Verdict(12, None, signed=False, seals=6)


def test_a_consistent_rewrite_without_the_key_fails_at_the_next_seal(
    tmp_path: Path,
) -> None:
    path = signed_log(tmp_path)
    rewrite(path, to_version(9))  # record 5 edited, every hash recomputed
    assert [r["details"].get("version") for r in read(path)][4] == 9
    assert verify(path).broken is None  # the hash chain alone cannot tell
    found = verify(path, key=KEY)
    assert found.broken is not None
    assert found.broken.line == 6  # the seal right after the edited record
    assert found.broken.reason.startswith(
        "seal record 6: signature does not match; the records after record 4 up "
        "to record 6 were rewritten without the audit key"
    )
    assert found.checked == 5


def test_removing_the_seals_or_signing_with_another_key_fails(tmp_path: Path) -> None:
    path = signed_log(tmp_path)
    rewrite(path, to_version(9), drop_seals=True)
    broken = verify(path, key=KEY).broken
    assert broken is not None and broken.line == 1
    assert broken.reason == (
        "records 1-6 are not covered by a signed seal: appended without the "
        "audit key, or their seals were removed"
    )
    rewrite(path, to_version(9), drop_seals=True, key=bytes.fromhex("22" * 32))
    broken = verify(path, key=KEY).broken
    assert broken is not None and broken.line == 7
    assert "signature does not match" in broken.reason


def test_records_appended_without_the_key_are_named(tmp_path: Path) -> None:
    path = signed_log(tmp_path, records=2)
    audit_event(path, "ana", "rollback", version=1)  # a writer without the key
    broken = verify(path, key=KEY).broken
    assert broken is not None and broken.line == 5
    assert broken.reason.startswith("records 5-5 are not covered by a signed seal")
    audit_event(AuditLog(path, KEY), "ana", "promote", version=3)
    assert verify(path, key=KEY) == Verdict(7, None, signed=True, seals=3)


def test_a_signed_prune_checkpoint_cannot_be_forged(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    old = [entry("ana", "predict", {"request_id": str(i)}) for i in range(5)]
    for e in old:
        e["at"] = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    append(path, old, key=KEY)
    audit_event(AuditLog(path, KEY), "ana", "promote", version=3)
    cut = datetime.now(UTC) - timedelta(days=30)
    assert prune(path, cut, principal="root", key=KEY) == 5  # their seal is newer
    assert verify(path, key=KEY) == Verdict(3, None, signed=True, seals=2)
    lines = path.read_bytes().splitlines(keepends=True)
    checkpoint = orjson.loads(lines[0][65:])
    del checkpoint["prev"], checkpoint["seq"], checkpoint["details"]["mac"]
    forged = next(chain_lines([checkpoint], lines[1][74:138].decode(), 4))
    path.write_bytes(forged + b"".join(lines[1:]))
    broken = verify(path, key=KEY).broken
    assert broken is not None and str(broken) == (
        "line 1: checkpoint not signed with the audit key"
    )


def test_a_buffer_with_the_key_seals_each_flush(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    buffer = AuditBuffer(path, flush_seconds=3600, key=KEY)
    buffer.start()
    buffer.record([entry("svc", "predict", {"request_id": str(i)}) for i in range(3)])
    buffer.flush()
    buffer.record([entry("svc", "predict", {"request_id": "late"})])
    buffer.close()
    assert [r["action"] for r in read(path)] == ["predict"] * 3 + ["seal"] + [
        "predict",
        "seal",
    ]
    assert verify(path, key=KEY) == Verdict(6, None, signed=True, seals=2)


def test_the_audit_key_is_read_like_the_pii_key(tmp_path: Path) -> None:
    settings = load_settings(workspace=tmp_path / "ws")
    assert audit_log(settings, {}).key is None
    assert audit_log(settings, {"AISTACK_AUDIT_KEY": "11" * 32}).key == KEY
    with pytest.raises(ConfigError, match="audit_key_env AISTACK_AUDIT_KEY: the audit"):
        audit_log(settings, {"AISTACK_AUDIT_KEY": "abc"})
    (tmp_path / "ws").mkdir()
    inside = settings.model_copy(
        update={"audit_key_file": new_key_file(tmp_path / "ws" / "audit.key")}
    )
    with pytest.raises(ConfigError, match=r"audit_key_file: .* inside the workspace"):
        audit_log(inside, {})
    outside = new_key_file(tmp_path / "audit.key")
    placed = settings.model_copy(update={"audit_key_file": outside})
    assert audit_log(placed, {}).key == bytes.fromhex(outside.read_text().strip())


def test_cli_verify_says_unsigned_or_signed_and_names_a_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AISTACK_WORKSPACE": str(tmp_path / "ws")}
    monkeypatch.delenv("AISTACK_AUDIT_KEY", raising=False)
    signed_log(tmp_path / "ws")
    plain = aistack("audit", "verify", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "12 records verified" in plain.stdout
    assert "unsigned: no audit key configured" in plain.stdout
    keyed = {**env, "AISTACK_AUDIT_KEY": KEY.hex()}
    signed = aistack("audit", "verify", env=keyed)
    assert signed.returncode == 0, signed.stderr
    assert "signed: 6 seals checked with the audit key" in signed.stdout
    rewrite(audit_path(tmp_path / "ws"), to_version(9))
    assert aistack("audit", "verify", env=env).returncode == 0
    refused = aistack("audit", "verify", env=keyed)
    assert refused.returncode == 2
    assert "chain broken at line 6: seal record 6: signature does not match" in (
        " ".join(refused.stderr.split())
    )
