"""Streaming inference: events from a broker, scored in micro-batches, exactly once.

A consumer reads a micro-batch of messages (events and late labels), scores the
events through the same feature and model path as the HTTP server, updates the
aggregation state, appends the predictions to the Delta prediction log in one
commit, then publishes them to the output stream and acknowledges the batch in
one broker script. Exactly-once effect after a crash anywhere:

- killed before the commit: the messages are still pending; the restarted
  consumer scores them again (the state update is idempotent per event id and
  an event never sees events after it, so the values are the same);
- killed after the commit, before the ack: the restarted consumer finds the
  messages' stream ids in the log and only publishes and acknowledges them.

With `commit_interval_ms` > 0 a micro-batch's predictions are published as
soon as it is scored, and the log commit and the acknowledgement follow every
interval, for many micro-batches at once: the same two cases hold for the log,
and the output stream becomes at least once (a prediction published before a
crash and not yet committed is published again when its event is scored again,
with the same event id).

Partitions: with `stream_partitions` N > 1 the input is N streams, and each
event goes to the one of its partition key: the entity of the views over recent
events (`partition_key`), so all events of one entity are read, in order, by one
consumer (a consumer holds its partition by a renewed lease; a second consumer
of the same partition waits as a standby). Labels go to every partition, before
the events that may count them. Views keyed on another entity only read events
older than their shift (fraud: terminals, 7 days); a consumer waits before
scoring an event at t until every other partition has committed its events up to
t - bound (or has nothing left), the bound being the smallest shift or allowed
lateness of those views (fraud: 1 day), so their values are exact too and no
partition runs so far ahead that its writes prune events another partition's
earlier events still count.

The broker sits behind `EventSource`; Redis Streams (consumer groups, XACK) is
the implementation here. A Kafka source would map `read` to poll, `pending` to
the uncommitted offsets of its partitions, and `finish` to a transactional
produce + offset commit.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import mlflow
import orjson
import pyarrow as pa
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from aistack.contract import UseCase
from aistack.errors import ConfigError, LogUnavailableError
from aistack.features.online import OnlineStore, open_store, to_us
from aistack.features.realtime import apply_labels
from aistack.features.state import EventState, open_event_state
from aistack.governance.audit import AuditBuffer, audit_log, entry
from aistack.lake.delta import Appender, Lake
from aistack.registry.aliases import Registry
from aistack.serving.inference import Predictor, load_version, settle_heap
from aistack.serving.log import (
    LOG_STATS,
    log_records,
    log_schema,
    log_table,
    prediction_log_table,
)
from aistack.serving.requests import Scored, commit_features, predict, request_features
from aistack.settings import Settings
from aistack.sql import quote

log = logging.getLogger("aistack.stream")
Kind = Literal["event", "label"]


@dataclass(frozen=True)
class Message:
    """One broker message: an event payload or a label, with its broker id."""

    id: str
    kind: Kind
    data: dict[str, Any]
    enqueued_ms: int


class EventSource(Protocol):
    """A consumer's view of the broker."""

    def read(self, count: int, block_ms: int | None) -> list[Message]:
        """New messages for this consumer (waits up to `block_ms`; None: only
        those already there)."""
        ...

    def pending(self, count: int) -> list[Message]:
        """Messages delivered but never acknowledged: this consumer's own, and
        those of consumers idle long enough to be presumed dead."""
        ...

    def finish(
        self, outputs: Sequence[bytes], ids: Sequence[str], *, progress_us: int = 0
    ) -> None:
        """Publish `outputs` and acknowledge `ids`, atomically; record that the
        partition's events before `progress_us` (event time) are committed."""
        ...

    def advance(self, progress_us: int) -> None:
        """Record that the partition's events before `progress_us` are committed."""
        ...

    def lag(self) -> int:
        """Messages not yet delivered to the group."""
        ...

    def log_id(self, message_id: str) -> str:
        """The message's id as the prediction log keeps it (unique across
        partitions: two partitions' streams may hand out the same id)."""
        ...

    def behind(self, before_us: int) -> list[int]:
        """Other partitions that may still hold uncommitted events at or before
        `before_us` (event time)."""
        ...


def stream_names(
    use_case: str, partition: int = 0, partitions: int = 1
) -> dict[str, str]:
    """Input stream (of one partition), output stream, dead letters, group, and
    the keys recording the partition count, leases and progress of a use case."""
    base = f"aistack:{use_case}"
    events = f"{base}:events" if partitions == 1 else f"{base}:events:{partition}"
    return {
        "events": events,
        "predictions": f"{base}:predictions",
        "dead": f"{base}:dead_letters",
        "group": f"aistack-{use_case}",
        "partitions": f"{base}:stream_partitions",
        "lease": f"{events}:owner",
        "progress": f"{base}:stream_progress",
    }


def partition_key(use_case: UseCase) -> str:
    """The payload field events are partitioned by: the entity of the views over
    recent events (a window without shift), else the event id."""
    recent = sorted(
        {
            v.entity
            for v in use_case.aggregation_views
            if any(s.shift_us == 0 for s in v.specs)
        }
    )
    if len(recent) > 1:
        msg = (
            f"stream_partitions: views over recent events of {', '.join(recent)} "
            "cannot all be kept in order by one partitioning; use 1 partition"
        )
        raise ConfigError(msg)
    return recent[0] if recent else use_case.labels.id


_US = timedelta(microseconds=1)
MIN_CROSS_BOUND_US = 1_000_000
"""Partitions may run this far apart at least (a view's lateness below it)."""


def cross_bound_us(use_case: UseCase, key: str) -> int | None:
    """How far (event time) a partition may run ahead of the others: the
    smallest shift or allowed lateness of the views keyed on another entity than
    `key` (their events come from every partition), at least
    `MIN_CROSS_BOUND_US`; None if there are no such views."""
    bounds = [
        min(*(s.shift_us for s in v.specs), v.allowed_lateness // _US)
        for v in use_case.aggregation_views
        if v.entity != key
    ]
    return max(min(bounds), MIN_CROSS_BOUND_US) if bounds else None


def _spans(times: Sequence[int], bound: int) -> list[slice]:
    """Consecutive runs of `times`, each spanning less than `bound`."""
    out, start, low, high = [], 0, 0, 0
    for i, t in enumerate(times):
        if i == start:
            low = high = t
        elif max(high, t) - min(low, t) >= bound:
            out.append(slice(start, i))
            start, low, high = i, t, t
        else:
            low, high = min(low, t), max(high, t)
    out.append(slice(start, len(times)))
    return out


def partition_of(value: object, partitions: int) -> int:
    """The partition of a partition key's value (stable across processes)."""
    return zlib.crc32(str(value).encode()) % partitions


def check_partitions(client: redis.Redis, use_case: str, partitions: int) -> None:
    """Record the use case's partition count, or refuse one that differs."""
    key = stream_names(use_case)["partitions"]
    client.set(key, partitions, nx=True)
    recorded = int(client.get(key) or partitions)
    if recorded != partitions:
        msg = (
            f"stream_partitions: {partitions}, but the streams of {use_case} were "
            f"created with {recorded} (delete {key} and the streams to change it)"
        )
        raise ConfigError(msg)


# Take the lease if free or ours (and renew it); else answer its holder.
_FINISH = """
-- KEYS: output stream, input stream, progress hash; ARGV: group, partition,
-- progress (-1: none), n, then n outputs, then the ids to acknowledge
local n = tonumber(ARGV[4])
for i = 1, n do
  redis.call('XADD', KEYS[1], '*', 'data', ARGV[4 + i])
end
local last = #ARGV
for i = 5 + n, last, 1000 do  -- unpack takes a bounded number of values
  redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, math.min(i + 999, last)))
end
local progress = tonumber(ARGV[3])
if progress >= 0 then
  local old = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '-1')
  if progress > old then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
end
return n
"""
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return holder
"""


class RedisStreamSource:
    """Redis Streams with a consumer group."""

    def __init__(
        self,
        url: str,
        use_case: str,
        *,
        consumer: str,
        partition: int = 0,
        partitions: int = 1,
        claim_idle_ms: int = 30_000,
        lease_ms: int = 10_000,
    ) -> None:
        if not 0 <= partition < partitions:
            msg = f"partition: {partition} is not in 0..{partitions - 1}"
            raise ConfigError(msg)
        self.client = redis.Redis.from_url(url, socket_timeout=30)
        check_partitions(self.client, use_case, partitions)
        self.use_case = use_case
        self.partition = partition
        self.partitions = partitions
        self.names = stream_names(use_case, partition, partitions)
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.lease_ms = lease_ms
        self._lease = self.client.register_script(_LEASE)
        self._finish = self.client.register_script(_FINISH)
        for p in range(partitions):
            _create_group(self.client, stream_names(use_case, p, partitions))

    def log_id(self, message_id: str) -> str:
        """`<partition>/<id>` with several partitions, else the stream id."""
        return message_id if self.partitions == 1 else f"{self.partition}/{message_id}"

    def acquire(self) -> str | None:
        """Take (or renew) this partition's lease; the other holder if it is held."""
        holder = self._lease(
            keys=[self.names["lease"]], args=[self.consumer, self.lease_ms]
        )
        return None if holder is None else bytes(holder).decode()

    def _renew(self) -> None:
        holder = self.acquire()
        if holder is not None:
            msg = f"partition {self.partition}: the lease was taken by {holder}"
            raise ConfigError(msg)

    def _messages(self, entries: Sequence[Any]) -> list[Message]:
        out = []
        for ident, fields in entries:
            if not fields:  # deleted from the stream while pending
                continue
            key = ident.decode() if isinstance(ident, bytes) else str(ident)
            kind = fields.get(b"kind", b"event").decode()
            data = orjson.loads(fields[b"data"])
            out.append(Message(key, kind, data, int(key.split("-")[0])))
        return out

    def read(self, count: int, block_ms: int | None) -> list[Message]:
        """New messages for this consumer (waits up to `block_ms`; None: only
        those already there)."""
        self._renew()
        found: Any = self.client.xreadgroup(
            self.names["group"],
            self.consumer,
            {self.names["events"]: ">"},
            count=count,
            block=block_ms,
        )
        return self._messages(found[0][1]) if found else []

    def pending(self, count: int) -> list[Message]:
        """Own unacknowledged messages, then ones claimed from idle consumers."""
        self._renew()
        own: Any = self.client.xreadgroup(
            self.names["group"],
            self.consumer,
            {self.names["events"]: "0"},
            count=count,
        )
        mine = self._messages(own[0][1]) if own else []
        if mine:
            return mine
        claimed = self.client.xautoclaim(
            self.names["events"],
            self.names["group"],
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=count,
        )
        return self._messages(claimed[1])

    def finish(
        self, outputs: Sequence[bytes], ids: Sequence[str], *, progress_us: int = 0
    ) -> None:
        """XADD every output, XACK every id and raise the partition's progress in
        one script (atomic, as a MULTI/EXEC: one command instead of one per
        output, 3.0 -> 0.45 ms of client CPU for 500 outputs)."""
        advance = progress_us if progress_us and self.partitions > 1 else -1
        self._finish(
            keys=[
                self.names["predictions"],
                self.names["events"],
                self.names["progress"],
            ],
            args=[
                self.names["group"],
                self.partition,
                advance,
                len(outputs),
                *outputs,
                *ids,
            ],
        )

    def advance(self, progress_us: int) -> None:
        """Record that the partition's events before `progress_us` are committed
        (a stream is in time order: those before the batch being scored)."""
        if self.partitions > 1:
            self.finish([], [], progress_us=progress_us)

    def behind(self, before_us: int) -> list[int]:
        """Other partitions whose committed progress is not past `before_us` and
        that still have undelivered or unacknowledged messages."""
        if self.partitions == 1:
            return []
        progress = self.client.hgetall(self.names["progress"])
        out = []
        for p in range(self.partitions):
            if p == self.partition or int(progress.get(str(p).encode(), -1)) > (
                before_us
            ):
                continue
            names = stream_names(self.use_case, p, self.partitions)
            if _backlog(self.client, names):
                out.append(p)
        return out

    def dead_letter(self, message: Message, reason: str) -> None:
        """Keep an invalid message with its reason (acknowledged with its batch)."""
        self.client.xadd(
            self.names["dead"],
            {"id": message.id, "data": orjson.dumps(message.data), "reason": reason},
        )

    def lag(self) -> int:
        """Messages not yet delivered to the group (Redis 7 `lag`)."""
        return _group_info(self.client, self.names)[0]


def _create_group(client: redis.Redis, names: Mapping[str, str]) -> None:
    try:
        client.xgroup_create(names["events"], names["group"], id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _group_info(client: redis.Redis, names: Mapping[str, str]) -> tuple[int, int]:
    """(undelivered, pending) messages of the group on one partition's stream."""
    for group in client.xinfo_groups(names["events"]):
        if group["name"].decode() == names["group"]:
            return int(group.get("lag") or 0), int(group.get("pending") or 0)
    return 0, 0


def _backlog(client: redis.Redis, names: Mapping[str, str]) -> bool:
    lag, pending = _group_info(client, names)
    return lag + pending > 0


@dataclass
class StreamMetrics:
    """Prometheus metrics of one consumer process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "aistack_stream_events", "Events scored and committed", registry=r
        )
        self.labels = Counter("aistack_stream_labels", "Labels applied", registry=r)
        self.invalid = Counter(
            "aistack_stream_invalid", "Messages sent to dead letters", registry=r
        )
        self.recovered = Counter(
            "aistack_stream_recovered",
            "Pending messages found already committed (only acknowledged)",
            registry=r,
        )
        self.lag = Gauge(
            "aistack_stream_consumer_lag", "Messages not yet delivered", registry=r
        )
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.latency = Histogram(
            "aistack_stream_event_to_prediction_seconds",
            "From the event's arrival in the stream to its published prediction",
            buckets=buckets,
            registry=r,
        )
        self.committed = Histogram(
            "aistack_stream_event_to_commit_seconds",
            "From the event's arrival in the stream to its prediction's commit "
            "to the log and the event's acknowledgement",
            buckets=buckets,
            registry=r,
        )
        self.partition_wait = Counter(
            "aistack_stream_partition_wait_seconds",
            "Time spent waiting for other partitions to commit older events",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "aistack_stream_batch_seconds",
            "Time to process one micro-batch",
            registry=r,
        )


@dataclass
class _Uncommitted:
    """Micro-batches scored (and their state written) but not yet in the log."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    unpublished: list[int] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)
    opened: float = 0.0
    number: int = 0  # the consumer's n-th commit
    progress_us: int = 0  # the partition's progress when it was closed

    def add(
        self,
        records: Sequence[dict[str, Any]],
        ids: Sequence[str],
        events: Sequence[int],
        outputs: Sequence[bytes],
        *,
        early: bool,
    ) -> None:
        if not self.ids:
            self.opened = time.monotonic()
        self.records.extend(records)
        self.ids.extend(ids)
        self.enqueued.extend(events)
        if not early:
            self.unpublished.extend(events)
            self.outputs.extend(outputs)


class _Committer:
    """Commits the micro-batches handed to it on its own thread, in order, one
    waiting at most: the log's Delta commit no longer stalls the scoring (it
    took 45-58 ms every 500 ms at 8,000 events/s, up to 140 ms). A failure
    stops it; the consumer raises it at its next hand-over, and the batches not
    committed stay pending in the broker, scored again by the next consumer."""

    def __init__(self, write: Callable[[_Uncommitted], None]) -> None:
        self._write = write
        self._queue: queue.Queue[_Uncommitted | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="aistack-log-commit", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self.error is None:
                    self._write(batch)
            except BaseException as exc:  # raised in the consumer
                self.error = exc
            finally:
                self._queue.task_done()

    def _check(self) -> None:
        if self.error is not None:
            msg = f"the prediction log commit failed: {self.error}"
            raise LogUnavailableError(msg) from self.error

    def submit(self, batch: _Uncommitted) -> None:
        self._check()
        self._queue.put(batch)

    def wait(self) -> None:
        self._queue.join()
        self._check()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _load_champion(registry: Registry, use_case: UseCase) -> Predictor | None:
    version = registry.version_of(use_case.name, "champion")
    if version is None:
        return None
    predictor = load_version(registry, use_case.name, version)[0]
    settle_heap()
    return predictor


@dataclass
class Consumer:
    """Scores a stream of one use case; see the module docstring."""

    use_case: UseCase
    settings: Settings
    source: EventSource
    consumer: str
    principal: str = "stream"
    """Who scores (the principal granted `predict`), as the audit log names it."""
    batch_size: int = 500
    block_ms: int = 200
    linger_ms: int = 0
    """After a read that found fewer than `batch_size` messages, wait this long
    (from that read) and take what arrived meanwhile into the same micro-batch:
    fewer, larger batches, so less CPU per event under load (Kafka's
    fetch.max.wait.ms). 0: score whatever a read found at once."""
    commit_interval_ms: int = 0
    """0: each micro-batch is appended to the log in its own commit, then its
    predictions are published and its messages acknowledged (the output stream
    exactly once too). N > 0: a micro-batch's predictions are published as soon
    as it is scored, and the log is committed and the messages acknowledged
    every N ms (and when the stream is idle, when `max_uncommitted` messages
    wait, and at stop): one Delta commit for many micro-batches, so less CPU
    per event and no commit between an event and its prediction (Kafka
    Streams' commit.interval.ms). The log stays exactly once; the output stream
    is at least once (after a crash, predictions scored but not yet committed
    are published again, with the same event ids)."""
    max_uncommitted: int = 50_000
    metrics: StreamMetrics = field(default_factory=StreamMetrics)
    processed: int = 0
    _batches: int = 0
    _commits: int = 0
    lake: Lake = field(init=False)
    appender: Appender = field(init=False)
    store: OnlineStore = field(init=False)
    events: EventState | None = field(init=False)
    registry: Registry = field(init=False)
    audit: AuditBuffer | None = field(init=False)
    predictor: Predictor | None = field(init=False, default=None)
    _checked: float = field(init=False, default=0.0)
    _progress_us: int = field(init=False, default=0)
    _open: _Uncommitted = field(init=False, default_factory=_Uncommitted)
    _committer: _Committer | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        self.lake = Lake(s.tables_dir)
        self.store = open_store(s.online_url, s.workspace, self.use_case.name)
        self.events = (
            open_event_state(s.online_url, s.workspace, self.use_case.name)
            if self.use_case.aggregation_views
            else None
        )
        self.registry = Registry(self.lake, s.mlflow_uri)
        log = audit_log(s, os.environ)
        self.audit = (
            AuditBuffer(
                log.path,
                flush_seconds=s.audit_flush_seconds,
                key=log.key,
                anchor=log.anchor,
            )
            if s.audit_predictions
            else None
        )
        self.table = prediction_log_table(self.use_case)
        self.appender = self.lake.appender(self.table, stats=LOG_STATS)
        self.schema = log_schema(self.use_case.feature_names)
        key = partition_key(self.use_case) if s.stream_partitions > 1 else ""
        self.cross_bound_us = cross_bound_us(self.use_case, key) if key else None

    def _follow_champion(self) -> Predictor:
        now = time.monotonic()
        if self.predictor is None or now - self._checked > self.settings.poll_seconds:
            self._checked = now
            version = self.registry.version_of(self.use_case.name, "champion")
            if self.predictor is None or version != self.predictor.version:
                self.predictor = _load_champion(self.registry, self.use_case)
        if self.predictor is None:
            raise ConfigError(
                f"use case {self.use_case.name}: no champion to score with"
            )
        return self.predictor

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> int:
        """Recover pending messages, then consume until `stop` (or idle)."""
        mlflow.set_tracking_uri(self.settings.mlflow_uri)
        mlflow.set_registry_uri(self.settings.mlflow_uri)
        if self.audit is not None:
            self.audit.start()  # chains what a killed consumer wrote ahead
        if self.commit_interval_ms:
            self._committer = _Committer(self._write)
        try:
            return self._consume(stop, until_idle=until_idle)
        finally:
            if self._committer is not None:
                self._committer.close()
                self._committer = None
            if self.audit is not None:
                self.audit.close()

    def _consume(self, stop: threading.Event, *, until_idle: bool) -> int:
        while not stop.is_set():
            pending = self.source.pending(self.batch_size)
            if not pending:
                break
            self.process(pending, recovered=True)
        while not stop.is_set():
            batch = self.source.read(self.batch_size, self._block_ms())
            if batch and self.linger_ms and len(batch) < self.batch_size:
                stop.wait(self.linger_ms / 1000)
                batch += self.source.read(self.batch_size - len(batch), None)
            if batch:
                self.process(batch, recovered=False)
            else:
                self.commit(wait=until_idle)  # idle: nothing to wait for
                self.metrics.lag.set(self.source.lag())
                if until_idle and not self.source.pending(1):
                    break
        self.commit(wait=True)  # a clean stop leaves nothing unacknowledged
        return self.processed

    def _block_ms(self) -> int:
        """How long a read may wait: not past the open commit's due time."""
        if not self._open.ids:
            return self.block_ms
        due = self._open.opened + self.commit_interval_ms / 1000
        return max(1, min(self.block_ms, int((due - time.monotonic()) * 1000)))

    def process(self, messages: Sequence[Message], *, recovered: bool) -> None:
        """Score one micro-batch; commit it, or publish its predictions and
        commit it with later ones (`commit_interval_ms`; see the module
        docstring)."""
        start = time.perf_counter()
        self._batches += 1
        if recovered:
            messages = self._skip_committed(messages)
            if not messages:
                return
        predictor = self._follow_champion()
        records: list[dict[str, Any]] = []
        outputs: list[bytes] = []
        for kind, run in _runs(messages):
            if kind == "label":
                self._labels(run)
            else:
                self._score(run, predictor, records, outputs)
        self._audit(records)
        self._failpoint("after_state")
        events = [m.enqueued_ms for m in messages if m.kind == "event"]
        early = self.commit_interval_ms > 0 and not recovered
        if early and outputs:
            self.source.finish(outputs, [])
            self._published(events)
        self._open.add(records, [m.id for m in messages], events, outputs, early=early)
        if not early:  # recovered messages are read again until acknowledged
            self.commit(wait=True)
        elif (
            len(self._open.ids) >= self.max_uncommitted
            or time.monotonic() - self._open.opened >= self.commit_interval_ms / 1000
        ):
            self.commit()
        self.metrics.batch_seconds.observe(time.perf_counter() - start)

    def commit(self, *, wait: bool = False) -> None:
        """Commit the open micro-batches (`_write`): here, or on the committer
        thread (`commit_interval_ms`), then waiting for it if `wait`."""
        batch = self._open
        if batch.ids:
            self._open = _Uncommitted()
            self._commits += 1
            batch.number, batch.progress_us = self._commits, self._progress_us
            if self._committer is None:
                self._write(batch)
            else:
                self._committer.submit(batch)
        if wait and self._committer is not None:
            self._committer.wait()

    def _write(self, batch: _Uncommitted) -> None:
        """Append the micro-batches' predictions to the log in one commit, then
        publish what is unpublished and acknowledge their messages."""
        if batch.records:
            self.appender.append(log_table(batch.records, self.schema))
        self._failpoint("after_commit", batch.number)
        self.source.finish(batch.outputs, batch.ids, progress_us=batch.progress_us)
        self._published(batch.unpublished)
        now_ms = time.time() * 1000
        for enqueued in batch.enqueued:
            self.metrics.committed.observe(max(now_ms - enqueued, 0) / 1000)
        self.metrics.events.inc(len(batch.records))
        self.processed += len(batch.records)

    def _published(self, enqueued_ms: Sequence[int]) -> None:
        now_ms = time.time() * 1000
        for enqueued in enqueued_ms:
            self.metrics.latency.observe(max(now_ms - enqueued, 0) / 1000)

    def _audit(self, records: Sequence[Mapping[str, Any]]) -> None:
        """One audit record per prediction, written ahead before the commit (at
        least once: a batch killed before its commit is audited again when it is
        scored again): who, model version, event and stream ids; not the payload."""
        if self.audit is None or not records:
            return
        self.audit.record(
            [
                entry(
                    self.principal,
                    "predict",
                    {
                        "use_case": self.use_case.name,
                        "model_version": r["model_version"],
                        "request_id": r["request_id"],
                        "stream_id": r["stream_id"],
                        "route": r["route"],
                    },
                )
                for r in records
            ]
        )

    def _labels(self, run: Sequence[Message]) -> None:
        items = []
        for m in run:
            try:
                items.append((m.data["event_id"], float(m.data["label"])))
            except (KeyError, TypeError, ValueError):
                self._dead(m, "label message needs event_id and a numeric label")
        if items and self.events is not None:
            result = apply_labels(self.events, self.use_case, items)
            self.metrics.labels.inc(result.applied)

    def _score(
        self,
        run: Sequence[Message],
        predictor: Predictor,
        records: list[dict[str, Any]],
        outputs: list[bytes],
    ) -> None:
        serving = self.use_case.serving
        assert serving is not None
        valid: list[tuple[Message, dict[str, Any]]] = []
        for m in run:
            try:
                valid.append((m, serving.request.model_validate(m.data).model_dump()))
            except ValidationError as exc:
                fields = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors()
                )
                self._dead(m, fields)
        if not valid:
            return
        clock = self.use_case.labels.timestamp
        if clock is None or self.cross_bound_us is None:
            self._score_part(valid, predictor, records, outputs)
            return
        times = [to_us(p[clock]) for _, p in valid]
        for part in _spans(times, self.cross_bound_us):
            last = max(times[part])
            self._await_partitions(min(times[part]), last)
            self._progress_us = max(self._progress_us, last)
            self._score_part(valid[part], predictor, records, outputs)
            # the state holds this partition's events before `last` now: the
            # other partitions need not wait for the log's commit to go on
            self.source.advance(last)

    def _score_part(
        self,
        valid: Sequence[tuple[Message, dict[str, Any]]],
        predictor: Predictor,
        records: list[dict[str, Any]],
        outputs: list[bytes],
    ) -> None:
        payloads = [p for _, p in valid]
        found = request_features(self.use_case, self.store, self.events, payloads)
        scored = predict(self.use_case, predictor, found)
        commit_features(self.use_case, self.events, found)
        records.extend(
            log_records(
                scored,
                payloads,
                route=f"stream:{self.consumer}",
                online_versions={},
                stream_ids=[self.source.log_id(m.id) for m, _ in valid],
            )
        )
        outputs.extend(_output(s) for s in scored)

    def _await_partitions(self, first_us: int, last_us: int) -> None:
        """Wait until every other partition has committed its events up to
        `last_us` - `cross_bound_us`: those that views keyed on another entity
        count for the events of [`first_us`, `last_us`] (older than the shift),
        and no partition is ahead of another by more than the allowed lateness,
        so an event is never late (nor its windows pruned) only because another
        partition ran ahead.

        This partition first records that its events before `first_us` are
        committed; the events scored after one wait span less than the bound
        (`_spans`), so two consumers never wait for each other."""
        assert self.cross_bound_us is not None
        self.source.advance(first_us)
        start = time.perf_counter()
        while self.source.behind(last_us - self.cross_bound_us):
            time.sleep(0.005)
        self.metrics.partition_wait.inc(time.perf_counter() - start)

    def _dead(self, message: Message, reason: str) -> None:
        self.metrics.invalid.inc()
        dead = getattr(self.source, "dead_letter", None)
        if dead is not None:
            dead(message, reason)
        log.warning("message %s to dead letters: %s", message.id, reason)

    def _skip_committed(self, messages: Sequence[Message]) -> list[Message]:
        """Publish and acknowledge messages whose predictions are already logged."""
        if not self.lake.exists(self.table):
            return list(messages)
        ids = [self.source.log_id(m.id) for m in messages]
        con = self.lake.connect(self.lake.versions([self.table]))
        con.register("ids", pa.table({"stream_id": ids}))
        done = con.sql(
            f"SELECT * FROM {self.table} WHERE {quote('stream_id')} IN "
            "(SELECT stream_id FROM ids)"
        ).to_arrow_table()
        committed = set(done.column("stream_id").to_pylist())
        if committed:
            rows = done.to_pylist()
            self.source.finish(
                [_logged_output(r) for r in rows],
                [m.id for m, i in zip(messages, ids, strict=True) if i in committed],
            )
            self.metrics.recovered.inc(len(committed))
        return [m for m, i in zip(messages, ids, strict=True) if i not in committed]

    def _failpoint(self, name: str, count: int | None = None) -> None:
        """SIGKILL at `<name>:<n>`, as the tests' AISTACK_STREAM_FAILPOINT says:
        the n-th micro-batch (or `count`: the n-th log commit)."""
        point = self.settings.stream_failpoint
        if point is None:
            return
        where, _, nth = point.partition(":")
        if where == name and (self._batches if count is None else count) == int(nth):
            log.warning("failpoint %s: killing the consumer", point)
            os.kill(os.getpid(), signal.SIGKILL)


def _runs(messages: Sequence[Message]) -> Iterator[tuple[Kind, list[Message]]]:
    """Consecutive messages of one kind, in stream order."""
    run: list[Message] = []
    for m in messages:
        if run and run[-1].kind != m.kind:
            yield run[-1].kind, run
            run = []
        run.append(m)
    if run:
        yield run[-1].kind, run


def _output(s: Scored) -> bytes:
    """The task's answer (as the HTTP route gives it) for one event."""
    return orjson.dumps(
        {
            "event_id": s.event_id,
            **s.answer,
            "model_version": s.model_version,
            "late": s.late,
        }
    )


def _logged_output(row: dict[str, Any]) -> bytes:
    """The same output again, from its prediction-log row (after a crash)."""
    late = row.get("late") or ""
    answer = row.get("answer")  # rows logged before answers were: binary fields
    fields = (
        orjson.loads(answer)
        if answer
        else {"score": row["score"], "decision": row["decision"]}
    )
    return orjson.dumps(
        {
            "event_id": row["event_id"],
            **fields,
            "model_version": row["model_version"],
            "late": late.split(",") if late else [],
        }
    )


def stream_url(settings: Settings) -> str:
    """The Redis holding the streams: `stream_url`, else a Redis `online_url`."""
    url = settings.stream_url or settings.online_url
    if url is None or not url.startswith(("redis://", "rediss://", "unix://")):
        msg = (
            "stream_url: set AISTACK_STREAM_URL (or a Redis online_url) to redis://..."
        )
        raise ConfigError(msg)
    return url


@dataclass(frozen=True)
class ReplayResult:
    """What a replay pushed."""

    events: int
    labels: int
    seconds: float


def replay(
    lake: Lake,
    use_case: UseCase,
    url: str,
    *,
    start: datetime,
    end: datetime,
    rate: float = 0.0,
    partitions: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Push the label table's events with start <= time < end into the stream in
    time order, at `rate` events/s (0: as fast as possible); each label follows
    once the stream's time passes its event time + the label delay (labels of
    events from `start - delay` on, so none is known before the replay). With
    `partitions`, each event goes to its key's partition, each label to all."""
    labels = use_case.labels
    if labels.timestamp is None:
        msg = f"{use_case.name}: rows without labels.timestamp have no order to replay"
        raise ConfigError(msg)
    version = lake.version(labels.table)
    if version is None:
        raise ConfigError(f"{labels.table} does not exist yet: run the pipeline first")
    con = lake.connect({labels.table: version})
    columns = dict.fromkeys([labels.id, labels.timestamp, *labels.columns])
    select = ", ".join(quote(c) for c in columns)
    ts = quote(labels.timestamp)
    rows = (
        con.sql(
            f"SELECT {select}, {quote(labels.label)} AS _label FROM {labels.table} "
            f"WHERE {ts} >= $lo AND {ts} < $end ORDER BY {ts}, {quote(labels.id)}",
            params={"lo": start - labels.delay, "end": end},
        )
        .to_arrow_table()
        .to_pylist()
    )
    client = redis.Redis.from_url(url)
    check_partitions(client, use_case.name, partitions)
    streams = [
        stream_names(use_case.name, p, partitions)["events"] for p in range(partitions)
    ]
    key = partition_key(use_case) if partitions > 1 else labels.id
    pending = deque(r for r in rows if r[labels.timestamp] < start)
    events = [r for r in rows if r[labels.timestamp] >= start]
    began = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    n_labels = 0
    k = 0
    for k, row in enumerate(events, 1):
        now = row[labels.timestamp]
        while pending and pending[0][labels.timestamp] + labels.delay <= now:
            done = pending.popleft()
            body = {"event_id": done[labels.id], "label": done["_label"]}
            for stream in streams:
                pipe.xadd(stream, {"kind": "label", "data": orjson.dumps(body)})
            n_labels += 1
        payload = {c: row[c] for c in columns}
        pipe.xadd(
            streams[partition_of(row[key], partitions)],
            {"kind": "event", "data": orjson.dumps(payload, default=str)},
        )
        pending.append(row)
        if rate > 0:
            due = began + k / rate
            if due - time.perf_counter() > 0.005:  # noqa: PLR2004
                pipe.execute()
                time.sleep(max(due - time.perf_counter(), 0))
        if k % 1000 == 0:
            pipe.execute()
            if progress is not None:
                progress(1000)
    pipe.execute()
    if progress is not None:
        progress(k % 1000)
    return ReplayResult(len(events), n_labels, time.perf_counter() - began)
