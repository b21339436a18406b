"""The prediction log: every served prediction, its features and lineage, in Delta.

One column per served feature (`feature_<name>`) so consistency can be
measured; written ahead to a local segment, committed off the request path,
flushed on shutdown and replayed after a crash (see `PredictionLog`).

The flusher turns the buffered JSON lines into Arrow with Arrow's own JSON
reader, which holds the GIL for about 1 ms per 5,000 rows where building the
columns from Python dicts held it for about 12 ms: a server's event loop
waits for the GIL while the flusher holds it, so that was a burst of slow
answers every flush (measured under a paced 1,000 requests/s, 1 worker: up to
65 ms for about 0.2 s each flush).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from aistack.contract import UseCase
from aistack.errors import LogUnavailableError
from aistack.lake.delta import Appender, Lake
from aistack.serving.requests import Scored
from aistack.wal import SEGMENT, background_loop, new_segment, orphan_segments


def prediction_log_table(use_case: UseCase) -> str:
    """Delta table of a use case's online predictions."""
    return f"ops.{use_case.name}_prediction_log"


log = logging.getLogger("aistack.serving")

_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
        ("route", pa.string()),
        ("payload", pa.string()),
        ("features", pa.string()),
        ("score", pa.float64()),
        ("decision", pa.bool_()),
        ("answer", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
        ("online_versions", pa.string()),
        ("unknown_entities", pa.string()),
        ("arm", pa.string()),
        ("event_id", pa.string()),
        ("event_time", pa.timestamp("us")),
        ("late", pa.string()),
        ("stream_id", pa.string()),
    ]
)
LOG_STATS = ("logged_at", "event_time")
"""The prediction log's columns with Delta statistics (see `Appender`)."""
FEATURE_PREFIX = "feature_"
"""Prediction-log column of each served feature: `feature_<name>`."""


def log_schema(feature_names: Sequence[str]) -> pa.Schema:
    """The prediction log's columns: fixed ones, then one per served feature."""
    extra = [pa.field(FEATURE_PREFIX + f, pa.float64()) for f in feature_names]
    return pa.schema([*_LOG_SCHEMA, *extra])


def log_records(
    scored: Sequence[Scored],
    payloads: Sequence[Mapping[str, Any]],
    *,
    route: str,
    online_versions: Mapping[str, int],
    stream_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One prediction-log record per scored request."""
    now = datetime.now(UTC)
    versions = orjson.dumps(dict(online_versions)).decode()
    return [
        {
            "request_id": s.request_id,
            "logged_at": now,
            "route": route,
            "payload": orjson.dumps(p, default=str).decode(),
            "features": orjson.dumps(s.features).decode(),
            "score": s.score,
            "decision": s.decision,
            "answer": orjson.dumps(s.answer).decode(),
            "model_name": s.model_name,
            "model_version": s.model_version,
            "online_versions": versions,
            "unknown_entities": ",".join(s.unknown_entities),
            "arm": s.arm,
            "event_id": s.event_id,
            "event_time": _naive_utc(s.event_time),
            "late": ",".join(s.late),
            "stream_id": None if stream_ids is None else stream_ids[k],
            **{FEATURE_PREFIX + f: v for f, v in s.features.items()},
        }
        for k, (s, p) in enumerate(zip(scored, payloads, strict=True))
    ]


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def log_table(records: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Records as an Arrow table of the log's schema."""
    columns = {
        name: pa.array([r.get(name) for r in records], schema.field(name).type)
        for name in schema.names
    }
    return pa.table(columns, schema=schema)


def lines_table(lines: bytes, schema: pa.Schema) -> pa.Table:
    """JSON lines (as `PredictionLog` buffers them) as an Arrow table of `schema`.

    Parsed by Arrow, which releases the GIL; lines Arrow refuses (a value of
    another type than the column's) are decoded in Python, as a replay does.
    """
    try:
        return pa_json.read_json(
            pa.BufferReader(lines),
            read_options=pa_json.ReadOptions(use_threads=False),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid:
        return log_table([_decode(line) for line in lines.splitlines()], schema)


@dataclass
class _Segment:
    """One write-ahead file of records (JSON lines), flock-ed by its writer."""

    path: Path
    handle: IO[bytes]

    @classmethod
    def open_new(cls, folder: Path) -> _Segment:
        return cls(*new_segment(folder))

    def drop(self) -> None:
        """The records are in Delta: forget the file."""
        self.path.unlink(missing_ok=True)
        self.handle.close()  # closing releases the lock

    def hand_off(self) -> None:
        """Complete: renamed `.ready` (still locked), then released for the
        flusher (`LogFlusher`)."""
        self.path.rename(self.path.with_suffix(READY))
        self.handle.close()


READY = ".ready"
"""A complete segment a server worker handed off: never committed."""
COMMITTING = ".committing"
"""A segment the flusher took: it may or may not have reached the table."""
LOG_HANDOFF_ENV = "AISTACK_LOG_HANDOFF"
"""Set for the workers of a multi-worker server: they only write ahead, and the
supervisor process commits (`LogFlusher`)."""


def log_wal_dir(workspace: Path, table: str) -> Path:
    """Where a log table's write-ahead segments live."""
    return workspace / "wal" / table


@dataclass
class PredictionLog:
    """Every prediction appended to a Delta table, off the request path, never lost.

    With `wal_dir`, `append` first writes the records to a local write-ahead
    segment (JSON lines; one `write` per call, no fsync: the page cache keeps
    them if the process is killed) and raises `LogUnavailableError` when it
    cannot (disk full), so the caller answers 503 instead of acknowledging a
    prediction it could lose. A background thread flushes every
    `flush_seconds` or `max_rows`: it rotates the segment, commits its records
    to Delta and deletes the segment. A failed commit keeps the segment on disk
    (not in memory: the buffer stays bounded) and is retried; segments left by
    a killed process are replayed at the next start, skipping request ids
    already in the table. `close` flushes what is left (SIGTERM included).
    """

    lake: Lake
    table: str
    flush_seconds: float = 5.0
    max_rows: int = 50_000
    feature_names: Sequence[str] = ()
    wal_dir: Path | None = None
    schema: pa.Schema | None = None
    """Columns of the records (default: the prediction log's, `log_schema`)."""
    handoff: bool = False
    """Only write ahead: each flush hands the segment off to a `LogFlusher` in
    another process instead of committing it here (needs `wal_dir`)."""
    _lines: list[bytes] = field(default_factory=list)
    """Records queued since the last flush, as JSON lines (chunks of them)."""
    _queued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _segment: _Segment | None = None
    _pending: list[_Segment] = field(default_factory=list)
    _appender: Appender | None = None
    written: int = 0

    def start(self) -> None:
        """Replay segments of killed processes, then start the background flusher.

        Handing off, the flusher process replays them instead."""
        if self.handoff and self.wal_dir is None:
            raise ValueError("a prediction log that hands off needs a wal_dir")
        if self.wal_dir is not None:
            self._segment = _Segment.open_new(self.wal_dir)
            if not self.handoff:
                self._adopt_orphans()
        self._thread = threading.Thread(
            target=self._loop, name="prediction-log", daemon=True
        )
        self._thread.start()

    def append(
        self,
        scored: Sequence[Scored],
        payloads: Sequence[Mapping[str, Any]],
        *,
        route: str,
        online_versions: Mapping[str, int],
    ) -> None:
        """Queue one record per prediction (written ahead when a WAL is set)."""
        self.append_records(
            log_records(scored, payloads, route=route, online_versions=online_versions)
        )

    def append_records(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue records of `schema` (each with a `request_id` and `logged_at`)."""
        lines = b"".join(orjson.dumps(r, default=str) + b"\n" for r in records)
        with self._lock:
            if self._segment is not None:
                try:
                    self._segment.handle.write(lines)
                    self._segment.handle.flush()
                except OSError as exc:
                    msg = f"prediction log cannot be written ahead: {exc.strerror}"
                    raise LogUnavailableError(msg) from exc
            if not self.handoff:  # handing off, the segment is the only copy
                self._lines.append(lines)
            self._queued += len(records)
            full = self._queued >= self.max_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write what is buffered (and any earlier failed segment) now.

        Returns the rows written. On failure the rows stay in their segment on
        disk (without a WAL: back in the buffer) and the error is raised.
        Handing off: the rows handed off.
        """
        if self.handoff:
            return self._hand_off()
        with self._write_lock:
            with self._lock:
                chunks, self._lines, self._queued = self._lines, [], 0
                done = self._segment
                if done is not None and self.wal_dir is not None:
                    self._segment = _Segment.open_new(self.wal_dir)
            lines = b"".join(chunks)
            if done is None:  # no write-ahead log: the buffer is the only copy
                if not lines:
                    return 0
                try:
                    return self._write(lines_table(lines, self._schema))
                except Exception:
                    with self._lock:
                        self._lines.insert(0, lines)
                        self._queued += lines.count(b"\n")
                    raise
            if not lines:
                done.drop()
                return self._retry_pending()
            self._pending.append(done)
            return self._retry_pending(fresh=lines)

    def _hand_off(self) -> int:
        """Close the segment for the flusher process and write to a new one."""
        assert self.wal_dir is not None
        with self._lock:
            done, rows = self._segment, self._queued
            if done is None or not rows:
                return 0
            self._segment = _Segment.open_new(self.wal_dir)
            self._queued = 0
        done.hand_off()
        return rows

    @property
    def _schema(self) -> pa.Schema:
        return self.schema or log_schema(self.feature_names)

    def _write(self, table: pa.Table) -> int:
        """Commit `table` to the log (new columns merged: a newer server may log
        more); its rows."""
        if self._appender is None:
            self._appender = self.lake.appender(self.table, stats=LOG_STATS)
        self._appender.append(table)
        self.written += table.num_rows
        return int(table.num_rows)

    def _retry_pending(self, fresh: bytes | None = None) -> int:
        """Commit pending segments in order; the last one's rows may be in memory.

        Rows read back from disk are checked against the table first (a commit
        that landed before a crash is not written twice).
        """
        written = 0
        while self._pending:
            segment = self._pending[0]
            last = len(self._pending) == 1
            if last and fresh is not None:
                table = lines_table(fresh, self._schema)
            else:
                rows = self._unlogged(_read_segment(segment.path))
                table = log_table(rows, self._schema)
            if table.num_rows:
                self._write(table)  # raises: the segment stays pending, on disk
            written += table.num_rows
            self._pending.pop(0).drop()
        return written

    def _adopt_orphans(self) -> None:
        """Segments whose writer is gone (no lock held): replay them."""
        assert self.wal_dir is not None
        live = None if self._segment is None else self._segment.path
        for path, handle in orphan_segments(self.wal_dir, skip=live):
            self._pending.append(_Segment(path, handle))
        if self._pending:
            log.warning("replaying %d prediction-log segment(s)", len(self._pending))
            try:
                self._retry_pending()
            except Exception:
                log.exception("replaying the prediction log failed; will retry")

    def _unlogged(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return unlogged(self.lake, self.table, rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep the flusher alive; rows stay on disk
                log.exception("prediction log flush failed; will retry")

    def close(self) -> None:
        """Stop the flusher and write everything still buffered.

        With a WAL, a final flush that fails leaves the rows in their segment
        for the next start; without one, the error is raised.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception:
            if self.wal_dir is None:
                raise
            log.exception("prediction log left on disk for the next start")
            return
        if self._segment is not None:
            self._segment.drop()
            self._segment = None


def unlogged(
    lake: Lake, table: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`rows` whose request id is not in `table` yet (replays are idempotent)."""
    if not rows or not lake.exists(table):
        return rows
    con = lake.connect(lake.versions([table]))
    ids = [r["request_id"] for r in rows]
    found = con.execute(
        f"SELECT DISTINCT request_id FROM {table} "
        "WHERE request_id IN (SELECT unnest($ids))",
        {"ids": ids},
    ).fetchall()
    present = {r[0] for r in found}
    return [r for r in rows if r["request_id"] not in present]


@dataclass
class LogFlusher:
    """Commits the segments that the workers of a multi-worker server hand off
    (`PredictionLog(handoff=True)`), from the supervisor process.

    A worker that commits its own log holds the GIL for parts of every flush
    (building the table, the Delta commit's Python side) while its requests
    wait: measured on 2 workers under a paced 1,000 requests/s, answers that
    overlapped a flush had a p99 of 24-29 ms against 9-11 ms for the others.
    Here the flush runs in a process that serves nothing, on a thread at
    `aistack.wal.BACKGROUND_NICE`, so the kernel gives the workers the CPU first.

    Every `flush_seconds` it takes each `.ready` segment (locks it, renames it
    `.committing`), commits them together in one Delta commit and deletes
    them. A `.committing` segment left by a flusher that failed or died, and a
    worker's segment left by a killed worker, are committed after dropping the
    request ids already in the table, so nothing is written twice. `close`
    flushes what is left, after the workers have stopped.
    """

    lake: Lake
    table: str
    wal_dir: Path
    schema: pa.Schema
    flush_seconds: float = 5.0
    written: int = 0
    _appender: Appender | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Commit what earlier runs left, then every `flush_seconds`."""
        self._thread = threading.Thread(
            target=self._loop, name="prediction-log-flusher", daemon=True
        )
        self._thread.start()

    def flush(self) -> int:
        """Commit every segment handed off or left behind; the rows written."""
        with self._lock:
            written = self._recover()
            taken = []
            try:
                for path, handle in orphan_segments(self.wal_dir, suffix=READY):
                    moved = path.with_suffix(COMMITTING)
                    path.rename(moved)
                    taken.append((moved, handle))
                if taken:
                    lines = b"".join(p.read_bytes() for p, _ in taken)
                    written += self._write(lines_table(lines, self.schema))
                    for path, _ in taken:
                        path.unlink()
            finally:  # a failed commit leaves them `.committing`: recovered
                for _, handle in taken:
                    handle.close()
            return written

    def _recover(self) -> int:
        """Segments that may have reached the table (a flusher's that failed or
        died) or that no flusher took (a killed worker's): their rows not in
        the table yet."""
        written = 0
        for suffix in (COMMITTING, SEGMENT):
            for path, handle in orphan_segments(self.wal_dir, suffix=suffix):
                try:
                    rows = unlogged(self.lake, self.table, _read_segment(path))
                    if rows:
                        written += self._write(log_table(rows, self.schema))
                    path.unlink()
                finally:
                    handle.close()
        return written

    def _write(self, table: pa.Table) -> int:
        if self._appender is None:
            self._appender = self.lake.appender(self.table, stats=LOG_STATS)
        self._appender.append(table)
        self.written += table.num_rows
        return int(table.num_rows)

    def _loop(self) -> None:
        background_loop(
            self.flush, self.flush_seconds, self._stop, what="prediction log flush"
        )

    def close(self) -> None:
        """Stop the thread and commit what is left (the workers have stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.flush()
        except Exception:
            log.exception("prediction log left on disk for the next start")


def _read_segment(path: Path) -> list[dict[str, Any]]:
    """Records of a segment; a torn last line (killed mid-write) is skipped."""
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(_decode(line))
        except orjson.JSONDecodeError:
            continue
    return rows


def _decode(line: bytes) -> dict[str, Any]:
    """One buffered record back as a dict (its times as datetimes)."""
    row: dict[str, Any] = orjson.loads(line)
    for key in ("logged_at", "event_time"):
        if row.get(key) is not None:
            row[key] = datetime.fromisoformat(row[key])
    return row
