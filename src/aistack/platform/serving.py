"""Score requests online: online features + request-time features -> model -> decision.

Request-time features use the same polars expressions as the training set, and
view features come from the online store, so a request and a training row with the
same inputs get the same features. An unknown entity, or a value older than the
view's ttl, gets the view's declared defaults and is flagged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from aistack.platform.delta import Lake
from aistack.platform.inference import Predictor
from aistack.platform.online import OnlineStore, to_us
from aistack.platform.usecase import UseCase


@dataclass
class Scored:
    """One scored request, as answered and as logged."""

    request_id: str
    score: float
    decision: bool
    model_name: str
    model_version: int
    feature_age_seconds: dict[str, float | None]
    unknown_entities: list[str]
    features: dict[str, float]
    arm: str = "champion"


@dataclass
class LookupTimings:
    """Where a scoring call spent its time (seconds)."""

    lookup: float = 0.0
    total: float = 0.0
    matrix: np.ndarray | None = None


def request_columns(use_case: UseCase) -> list[str]:
    """Payload columns the features read: timestamp and label columns."""
    labels = use_case.labels
    return list(dict.fromkeys([labels.timestamp, *labels.columns]))


def score_requests(
    use_case: UseCase,
    store: OnlineStore,
    predictor: Predictor,
    payloads: Sequence[Mapping[str, Any]],
    *,
    timings: LookupTimings | None = None,
) -> list[Scored]:
    """Score payloads (validated request dicts) in one vectorised pass."""
    start = time.perf_counter()
    labels = use_case.labels
    n = len(payloads)
    ids = [p.get(labels.id) for p in payloads]
    call = uuid.uuid4().hex  # one per call; rows without an id get call-index
    request_ids = [
        str(i) if i is not None else f"{call}-{n}" for n, i in enumerate(ids)
    ]
    columns: dict[str, Any] = {
        c: [p[c] for p in payloads] for c in request_columns(use_case)
    }
    frame = pl.DataFrame(columns).with_columns(
        expr.alias(name) for name, expr in use_case.request_features.items()
    )
    values: dict[str, np.ndarray] = {
        name: frame.get_column(name).to_numpy().astype(np.float64)
        for name in use_case.request_features
    }
    values[labels.id] = np.array(
        [i if i is not None else 0 for i in ids], dtype=np.float64
    )
    ts_us = [to_us(t) for t in columns[labels.timestamp]]
    ages: list[dict[str, float | None]] = [{} for _ in range(n)]
    unknown: list[list[str]] = [[] for _ in range(n)]
    lookup_start = time.perf_counter()
    for view in use_case.views:
        ttl_us = view.ttl.total_seconds() * 1e6
        rows = store.get(view.name, columns[view.entity])
        defaults = [f.default for f in view.features]
        block = np.empty((n, len(defaults)), dtype=np.float64)
        for i, row in enumerate(rows):
            age_us = None if row is None else ts_us[i] - row.event_time_us
            if row is None or age_us is None or age_us > ttl_us:
                block[i] = defaults
                unknown[i].append(view.name)
                ages[i][view.name] = None if age_us is None else age_us / 1e6
                continue
            block[i] = [
                d if v is None else v for v, d in zip(row.values, defaults, strict=True)
            ]
            ages[i][view.name] = age_us / 1e6
        for j, name in enumerate(view.feature_names):
            values[name] = block[:, j]
    lookup = time.perf_counter() - lookup_start
    matrix = np.column_stack([values[f] for f in predictor.features])
    scores = predictor.score(matrix)
    threshold = use_case.serving.threshold if use_case.serving else 0.5
    names = use_case.feature_names
    if timings is not None:
        timings.matrix = matrix
    out = [
        Scored(
            request_ids[i],
            float(scores[i]),
            bool(scores[i] >= threshold),
            predictor.name,
            predictor.version,
            ages[i],
            unknown[i],
            {f: float(values[f][i]) for f in names},
        )
        for i in range(n)
    ]
    if timings is not None:
        timings.lookup = lookup
        timings.total = time.perf_counter() - start
    return out


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
    ]
)


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
        now = datetime.now(UTC)
        versions = orjson.dumps(dict(online_versions)).decode()
        records = [
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
            }
            for s, p in zip(scored, payloads, strict=True)
        ]
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
            columns = {
                name: pa.array([r[name] for r in rows], _LOG_SCHEMA.field(name).type)
                for name in _LOG_SCHEMA.names
            }
            try:
                self.lake.write(
                    self.table,
                    pa.table(columns, schema=_LOG_SCHEMA),
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
