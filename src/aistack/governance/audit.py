"""The audit log: append-only, hash-chained, one record per line.

Each line is `<sha256 of body> <body>`, the body a JSON object starting with
`{"prev":"<hash of the previous line>","seq":N,` so `verify` checks a line with
one hash and two slices, without parsing it (1 M records in about 2 s).
Appends take an exclusive flock on the file and fsync before returning.
Prediction records are batched: `AuditBuffer` writes each to a per-process
write-ahead segment (one `write`, no fsync, as the prediction log does) and a
flusher chains them into the log; segments of a killed process are chained at
the next start, so an acknowledged prediction is never lost (at least once).

Anyone who can write the file can also rewrite the whole chain consistently
(recomputing every hash). With an audit key (`audit_key_file` /
`audit_key_env`, outside the workspace) every append ends with a `seal`
record whose `mac` is HMAC-SHA256 over its own `prev` and `seq`: it signs the
chain head, hence every record before it. `verify` with the key checks every
seal, and that every record is covered by a later one; a rewrite without the
key breaks the first seal after the change.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from aistack.errors import ConfigError
from aistack.governance.keys import read_key
from aistack.governance.principals import Principal
from aistack.settings import Settings
from aistack.wal import background_loop, new_segment, orphan_segments

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"
"""Action of the first record after a prune: its `prev` is the last pruned hash."""
SEAL = "seal"
"""Action of a signed checkpoint: `details.mac` signs its `prev` and `seq`."""
SIGNER = "aistack"
"""Principal of seal records (the platform, not a caller)."""


class _HasSettings(Protocol):
    settings: Settings


def audit_path(where: Settings | _HasSettings | Path) -> Path:
    """The audit log file: given, or of a workspace (settings, workspace, folder)."""
    if isinstance(where, Path):
        return where if where.suffix == ".jsonl" else where / "audit" / "audit.jsonl"
    settings = where if isinstance(where, Settings) else where.settings
    return settings.workspace / "audit" / "audit.jsonl"


@dataclass(frozen=True)
class AuditLog:
    """The audit log file and the key its checkpoints are signed with."""

    path: Path
    key: bytes | None = field(default=None, repr=False)
    """HMAC-SHA256 key of the seals; None: the log is unsigned."""
    anchor: Path | None = None
    """File (outside the workspace) holding the last record's number and hash,
    rewritten by every append; None: a cut at the end is not detectable."""


def audit_log(settings: Settings, environ: Mapping[str, str]) -> AuditLog:
    """The workspace's audit log, signed when settings name an audit key, and
    anchored when they name an anchor file (refused inside the workspace)."""
    anchor = settings.audit_anchor_file
    if anchor is not None:
        anchor = anchor.resolve()
        if anchor.is_relative_to(settings.workspace.resolve()):
            msg = (
                f"audit_anchor_file: {anchor} is inside the workspace; keep it "
                "where whoever can rewrite the workspace cannot"
            )
            raise ConfigError(msg)
    return AuditLog(audit_path(settings), read_key(settings, "audit", environ), anchor)


@dataclass(frozen=True)
class Anchor:
    """The last record an append wrote: its number and hash."""

    seq: int
    hash: str


def read_anchor(path: Path) -> Anchor | None:
    """The anchor at `path`; None when no append has written one yet."""
    try:
        data = orjson.loads(path.read_bytes())
        return Anchor(int(data["seq"]), str(data["hash"]))
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        msg = f"audit_anchor_file {path}: not an audit anchor ({exc})"
        raise ConfigError(msg) from exc


def _write_anchor(path: Path, last: bytes) -> None:
    """Record the line `last` as the log's head at `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"seq": _seq(last[65:]), "hash": last[:64].decode()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(body + b"\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def mac(key: bytes, action: str, prev: str, seq: int) -> str:
    """The signature of a seal or checkpoint of link `prev` and number `seq`."""
    message = f"aistack-audit-v1:{action}:{prev}:{seq}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _name(principal: Principal | str) -> str:
    return principal if isinstance(principal, str) else principal.name


def entry(
    principal: Principal | str, action: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """An unchained record: when, who, what, the details."""
    return {
        "at": datetime.now(UTC).isoformat(),
        "principal": _name(principal),
        "action": action,
        "details": dict(details),
    }


def _last_line(handle: IO[bytes]) -> bytes | None:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return None
    chunk = min(size, 1 << 16)
    handle.seek(size - chunk)
    data = handle.read(chunk).rstrip(b"\n")
    return data.rsplit(b"\n", 1)[-1]


def _seq(body: bytes) -> int:
    return int(body[81 : body.index(b",", 81)])


def chain_lines(
    entries: Iterable[Mapping[str, Any]],
    prev: str,
    seq: int,
    *,
    key: bytes | None = None,
) -> Iterator[bytes]:
    """Lines chaining `entries` after the record of hash `prev` and number `seq`;
    with `key`, then a seal signing the last of them."""
    for e in entries:
        seq += 1
        head = f'{{"prev":"{prev}","seq":{seq},'.encode()
        body = head + orjson.dumps(e, option=orjson.OPT_SORT_KEYS)[1:]
        prev = hashlib.sha256(body).hexdigest()
        yield prev.encode() + b" " + body + b"\n"
    if key is not None:
        seal = entry(SIGNER, SEAL, {"mac": mac(key, SEAL, prev, seq + 1)})
        yield from chain_lines([seal], prev, seq)


def append(
    path: Path,
    entries: list[Mapping[str, Any]],
    *,
    key: bytes | None = None,
    anchor: Path | None = None,
) -> None:
    """Chain `entries` onto the log at `path` (locked, fsync-ed), sealed with
    `key`; then, still under the lock, record the new head at `anchor`."""
    if not entries:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        last = _last_line(handle)
        prev, seq = (
            (GENESIS, 0) if last is None else (last[:64].decode(), _seq(last[65:]))
        )
        handle.seek(0, os.SEEK_END)
        lines = list(chain_lines(entries, prev, seq, key=key))
        handle.write(b"".join(lines))
        handle.flush()
        os.fsync(handle.fileno())
        if anchor is not None:
            _write_anchor(anchor, lines[-1].rstrip(b"\n"))


def audit_event(
    where: AuditLog | Path,
    principal: Principal | str,
    action: str,
    **details: Any,  # noqa: ANN401
) -> None:
    """Record one action in the audit log (PII decrypts, erasures, promotions...);
    a bare path (a workspace or the file) is an unsigned log."""
    log = where if isinstance(where, AuditLog) else AuditLog(audit_path(where))
    append(
        log.path, [entry(principal, action, details)], key=log.key, anchor=log.anchor
    )


@dataclass(frozen=True)
class Break:
    """Where and how the chain breaks."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """What `verify` found."""

    checked: int
    """Records that hold, before the first break (a prune's checkpoint excluded)."""
    broken: Break | None
    signed: bool
    """Signatures were checked (a key was given)."""
    seals: int
    """Seal records seen (each checked when `signed`)."""
    last_seq: int = field(default=0, compare=False)
    """Number of the last record (when the chain holds)."""


def verify(
    path: Path, *, key: bytes | None = None, anchor: Path | None = None
) -> Verdict:
    """Check the chain and, with `key`, its signatures; name the first break.

    The fast path only hashes and compares `prev`: the links alone fix the
    order; sequence numbers are read to explain a break. With `key`, every
    seal's signature is checked (in constant time) and every record must be
    covered by a signed one at or after it. With `anchor`, the record it
    names must be in the log with its hash: records cut from the end (or the
    whole log replaced) are found.
    """
    head = None if anchor is None else read_anchor(anchor)
    if not path.exists():
        if head is not None:
            reason = f"the log is gone; the anchor {anchor} names record {head.seq}"
            return Verdict(0, Break(1, reason), key is not None, 0)
        return Verdict(0, None, key is not None, 0)
    with path.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # not half of a concurrent append
        data = handle.read()
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    verdict = _walk(lines, key, head)
    if verdict.broken is None and head is not None and verdict.last_seq < head.seq:
        n = len(lines) + 1
        what = (
            f"record {head.seq}"
            if head.seq == verdict.last_seq + 1
            else f"records {verdict.last_seq + 1}-{head.seq}"
        )
        reason = (
            f"{what} cut from the end: the log ends at record "
            f"{verdict.last_seq}, the anchor {anchor} names record {head.seq}"
        )
        return replace(verdict, broken=Break(n, reason))
    return verdict


def _walk(  # noqa: PLR0911  (one early return per kind of break)
    lines: list[bytes], key: bytes | None, anchor: Anchor | None = None
) -> Verdict:
    """`verify` over the log's lines (a break or signature failure returns early);
    the record `anchor` names, when reached, must have its hash."""
    prev, seq, first = GENESIS.encode(), 0, 1
    want = -1 if anchor is None else anchor.seq
    want_hash = b"" if anchor is None else anchor.hash.encode()
    signed_seq, signed_line, seals = 0, 0, 0
    if lines and b'"action":"checkpoint"' in lines[0]:
        # pruned before: the checkpoint holds the last pruned record's hash and number
        head, body = lines[0][:64], lines[0][65:]
        if hashlib.sha256(body).hexdigest().encode() != head:
            broken = Break(1, "checkpoint edited: its hash does not match it")
            return Verdict(0, broken, key is not None, 0)
        prev, seq, first = body[9:73], _seq(body), 2
        if seq == want and prev != want_hash:  # the anchored record was pruned
            broken = Break(1, _anchor_differs(seq))
            return Verdict(0, broken, key is not None, 0)
        if key is not None:
            if not _signed(key, CHECKPOINT, body):
                broken = Break(1, "checkpoint not signed with the audit key")
                return Verdict(0, broken, True, 0)
            signed_seq, signed_line = seq, 1
    sha256 = hashlib.sha256
    for n, line in enumerate(lines[first - 1 :], start=first):
        body = line[65:]
        digest = sha256(body).hexdigest().encode()
        if digest != line[:64] or body[9:73] != prev:
            reason = _why(line[:64], body, prev, seq, lines[n:])
            return Verdict(n - first, Break(n, reason), key is not None, seals)
        prev, seq = digest, seq + 1
        if seq == want and digest != want_hash:
            return Verdict(
                n - first, Break(n, _anchor_differs(seq)), key is not None, seals
            )
        if b'"action":"seal"' not in body[80:120]:
            continue
        seals += 1
        if key is None:
            continue
        if not _signed(key, SEAL, body):
            since = f"record {signed_seq}" if signed_seq else "the first record"
            reason = (
                f"seal record {seq}: signature does not match; the records after "
                f"{since} up to record {seq} were rewritten without the audit key "
                "(or signed with another key)"
            )
            return Verdict(n - first, Break(n, reason), True, seals)
        signed_seq, signed_line = seq, n
    if key is not None and signed_line < len(lines):
        reason = (
            f"records {signed_seq + 1}-{seq} are not covered by a signed seal: "
            "appended without the audit key, or their seals were removed"
        )
        n = signed_line + 1
        return Verdict(n - first, Break(n, reason), True, seals)
    return Verdict(len(lines) - first + 1, None, key is not None, seals, seq)


def _anchor_differs(seq: int) -> str:
    return (
        f"record {seq} is not the one the anchor names (its hash differs): "
        "the log was rewritten from there"
    )


def _signed(key: bytes, action: str, body: bytes) -> bool:
    """`body` (a seal or checkpoint) carries the signature of its prev and seq."""
    record = orjson.loads(body)
    given = record.get("details", {}).get("mac")
    if not isinstance(given, str):
        return False
    expected = mac(key, action, record["prev"], record["seq"])
    return hmac.compare_digest(given.encode(), expected.encode())


def _why(digest: bytes, body: bytes, prev: bytes, seq: int, rest: list[bytes]) -> str:
    """Why a line does not follow the record `seq` of hash `prev` (`rest`: the
    lines after it, where a missing record may have moved)."""
    if hashlib.sha256(body).hexdigest().encode() != digest:
        return "record edited: its hash does not match its content"
    try:
        got = _seq(body)
    except ValueError:
        return "record malformed: no sequence number"
    if got > seq + 1 and any(_seq(r[65:]) == seq + 1 for r in rest if r[65:]):
        return f"records reordered: record {got} comes before record {seq + 1}"
    if got > seq + 1:
        what = f"record {seq + 1}" if got == seq + 2 else f"records {seq + 1}-{got - 1}"
        return f"{what} deleted (record {got} follows record {seq})"
    if got <= seq:
        return f"records reordered: record {got} follows record {seq}"
    return f"record {got}: its previous hash does not match record {seq}"


def prune(
    path: Path, before: datetime, *, principal: str, key: bytes | None = None
) -> int:
    """Drop records older than `before`; a checkpoint keeps the rest verifiable.

    The checkpoint carries the last pruned record's hash (as its `prev`) and
    number, so the first kept record still links to it; with `key` it is signed
    (a forged checkpoint cannot cut the front of the log). Rewritten in place
    under the append lock: writers wait, none appends to a stale file.
    """
    if not path.exists():
        return 0
    with path.open("rb+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        lines = handle.read().splitlines(keepends=True)
        start = 1 if lines and b'"action":"checkpoint"' in lines[0] else 0
        cut = start
        stamp = before.isoformat().encode()
        while cut < len(lines) and _at(lines[cut]) < stamp:
            cut += 1
        if cut == start:
            return 0
        last = lines[cut - 1]
        last_hash, last_seq = last[:64].decode(), _seq(last[65:])
        details: dict[str, Any] = {
            "pruned_before": before.isoformat(),
            "pruned": cut - start,
        }
        if key is not None:
            details["mac"] = mac(key, CHECKPOINT, last_hash, last_seq)
        mark = chain_lines(
            [entry(principal, CHECKPOINT, details)], last_hash, last_seq - 1
        )
        handle.seek(0)
        handle.truncate()
        handle.write(next(iter(mark)) + b"".join(lines[cut:]))
        handle.flush()
        os.fsync(handle.fileno())
        return cut - start


def _at(line: bytes) -> bytes:
    i = line.index(b'"at":"') + 6
    return line[i : line.index(b'"', i)]


def read(path: Path) -> Iterator[dict[str, Any]]:
    """Every record, parsed (with its `seq`)."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            record: dict[str, Any] = orjson.loads(raw[65:])
            yield record


def audit_wal_dir(path: Path) -> Path:
    """Where the write-ahead segments of the audit log at `path` live."""
    return path.parent / "wal"


AUDIT_HANDOFF_ENV = "AISTACK_AUDIT_HANDOFF"
"""Set for the workers of a multi-worker server: they only write their audit
records ahead, and the supervisor process chains them (`AuditDrainer`)."""


@dataclass
class AuditBuffer:
    """Prediction records: written ahead per call, chained in batches off the path.

    With `handoff` (the workers of a multi-worker server) a flush only closes
    the segment, and the supervisor's `AuditDrainer` chains it: the chain's
    append (read the head, hash, seal, fsync) then runs outside the serving
    processes.
    """

    path: Path
    flush_seconds: float = 1.0
    key: bytes | None = field(default=None, repr=False)
    """Seals each flush when set (see `AuditLog.key`)."""
    anchor: Path | None = None
    """Head recorded after each flush when set (see `AuditLog.anchor`)."""
    handoff: bool = False
    _handle: IO[bytes] | None = None
    _segment: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def wal_dir(self) -> Path:
        """Where this log's write-ahead segments live."""
        return audit_wal_dir(self.path)

    def start(self) -> None:
        """Chain orphan segments (unless handing off), open a fresh one, start
        the flusher."""
        if not self.handoff:
            self._adopt_orphans()
        self._rotate()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="audit")
        self._thread.start()

    def record(self, entries: list[Mapping[str, Any]]) -> None:
        """Write `entries` ahead (raises OSError when the disk refuses them)."""
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        with self._lock:
            assert self._handle is not None, "AuditBuffer.start() first"
            self._handle.write(data)
            self._handle.flush()

    def flush(self) -> None:
        """Chain what was written ahead, then drop its segment."""
        with self._lock:
            old = self._segment
            old_handle = self._handle
            self._rotate()
        if old is not None and old_handle is not None:
            self._drain(old, old_handle)

    def close(self) -> None:
        """Stop the flusher and chain everything written ahead."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            old, old_handle, self._handle, self._segment = (
                self._segment,
                self._handle,
                None,
                None,
            )
        if old is not None and old_handle is not None:
            self._drain(old, old_handle)

    def _rotate(self) -> None:
        self._segment, self._handle = new_segment(self.wal_dir)

    def _drain(self, segment: Path, handle: IO[bytes]) -> None:
        if self.handoff:  # the drainer chains it once released (empty: gone)
            if not segment.stat().st_size:
                segment.unlink(missing_ok=True)
            handle.close()
            return
        _chain_segment(self.path, segment, handle, key=self.key, anchor=self.anchor)

    def _adopt_orphans(self) -> None:
        drain_orphans(self.path, key=self.key, anchor=self.anchor)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()


def _chain_segment(
    path: Path,
    segment: Path,
    handle: IO[bytes],
    *,
    key: bytes | None,
    anchor: Path | None,
) -> None:
    try:
        append(path, _read_segment(segment), key=key, anchor=anchor)
        segment.unlink(missing_ok=True)
    finally:
        handle.close()


def drain_orphans(path: Path, *, key: bytes | None, anchor: Path | None) -> None:
    """Chain every write-ahead segment of the log at `path` that no live
    process holds (handed off, or left by a killed one), then drop it."""
    for segment, handle in orphan_segments(audit_wal_dir(path)):
        _chain_segment(path, segment, handle, key=key, anchor=anchor)


@dataclass
class AuditDrainer:
    """Chains the audit segments a multi-worker server's workers hand off
    (`AuditBuffer(handoff=True)`), from the supervisor process, every
    `flush_seconds` on a thread at `aistack.wal.BACKGROUND_NICE`; `close`
    chains what is left once the workers have stopped."""

    path: Path
    flush_seconds: float = 1.0
    key: bytes | None = field(default=None, repr=False)
    anchor: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def drain(self) -> None:
        """Chain every released segment now."""
        drain_orphans(self.path, key=self.key, anchor=self.anchor)

    def start(self) -> None:
        """Chain what earlier runs left, then every `flush_seconds`."""
        self._thread = threading.Thread(
            target=background_loop,
            args=(self.drain, self.flush_seconds, self._stop),
            kwargs={"what": "audit chaining"},
            name="audit-drainer",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and chain what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.drain()


def _read_segment(path: Path) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for raw in path.read_bytes().splitlines():
        try:
            found.append(orjson.loads(raw))
        except orjson.JSONDecodeError:  # torn last line: killed mid-write, not acked
            continue
    return found
