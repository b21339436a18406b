"""The prediction log: every served prediction, its features and lineage, in Delta.

One column per served feature (`feature_<name>`) so consistency can be
measured; buffered off the request path and flushed on shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from aistack.contract import UseCase
from aistack.lake.delta import Lake
from aistack.serving.requests import Scored


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


@dataclass
class PredictionLog:
    """Buffered appends of every prediction to a Delta table, off the request path.

    A background thread flushes every `flush_seconds` or `max_rows`; `close`
    flushes what is left (the server calls it on shutdown, SIGTERM included).
    """

    lake: Lake
    table: str
    flush_seconds: float = 5.0
    max_rows: int = 50_000
    feature_names: Sequence[str] = ()
    _rows: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    written: int = 0

    def start(self) -> None:
        """Start the background flusher."""
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
        """Queue one record per prediction (cheap: no I/O here)."""
        records = log_records(
            scored, payloads, route=route, online_versions=online_versions
        )
        with self._lock:
            self._rows.extend(records)
            full = len(self._rows) >= self.max_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written.

        On failure the rows go back to the buffer (nothing is lost) and the
        error is raised to the caller.
        """
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                self.lake.write(
                    self.table,
                    log_table(rows, log_schema(self.feature_names)),
                    mode="append",
                    merge_schema=True,  # a newer server may log more columns
                    return_version=False,
                )
            except Exception:
                with self._lock:
                    self._rows[:0] = rows
                raise
            self.written += len(rows)
            return len(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep the flusher alive; rows stay buffered
                log.exception("prediction log flush failed; will retry")

    def close(self) -> None:
        """Stop the flusher and write everything still buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
