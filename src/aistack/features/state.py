"""Online aggregation state: each entity's recent events, for exact windowed features.

Per aggregation view and entity the state keeps the raw events inside the view's
retention (longest shift + window + allowed lateness) behind the entity's latest
event, and the labels that arrived for them, as one binary blob per entity
(`aistack.features.blob`). Every write is one read-modify-write transaction over
all the entities (and views) it touches: SQLite under an exclusive lock, Redis
with WATCH/MULTI retried on a conflict, so concurrent writers (server workers,
stream consumers) never lose each other's events. Writes are idempotent per
event id (a retried event is stored once) and commute (an event and its label
may arrive in any order). SQLite (a file in the workspace, the embedded default)
or Redis (production). A state of the former layout (rows per event, format 1)
is refused with an error saying to rebuild it.

Raw events rather than time buckets (tiles): on the default fraud simulation
a customer holds 61 events on average (303,311 for 5,000 cards over 31 days)
and a terminal 37 (371,601 for 10,000 over 38 days). Daily tiles for 1/7/30-day
windows would still need ~30 tiles plus the raw events of the two boundary days
to stay exact, about as many items as the raw events themselves, with a second
code path to keep equal to the SQL. Measured per request and view (in process,
CPU time, 2 busy cores): windows over 61 events 26 us (plain Python, binary
search plus `math.fsum` over each window) and decoding them ~55 us; at 1,000
events 0.3-0.8 ms + 2.8 ms and at 10,000 11-14 ms + 32 ms (one JSON object per
event then). The blob per entity (one `frombuffer` per column) measured against
rows per event, SQLite, one entity, CPU per call on 2 busy cores: read 159 ->
101 us at 61 events and 2,810 -> 1,094 us at 1,000; a write (one new event and
the prune) 50 -> 92 us and 138 -> 2,227 us, because the whole blob is rewritten:
the price of one read-modify-write per entity. Hot entities with thousands of
events would want tiles instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
import redis

from aistack.contract import Value
from aistack.errors import ConfigError, StoreUnavailableError
from aistack.features.aggregations import Event
from aistack.features.blob import (
    EntityState,
    Frame,
    add_events_many,
    decode,
    encode,
    events_of,
)
from aistack.sql import quote

log = logging.getLogger(__name__)

INDEX_SECONDS = 90 * 86_400
"""How long the label index remembers an event (a label arriving later finds
none): Redis expires the key that long after its write; SQLite deletes the
rows that much older, in event time, than the newest it indexed."""
_CHUNK = 500  # entities per SELECT ... IN (...)
_PRUNE_OUTLIERS = 999  # newest index rows a pruning does not measure from
_SEEN_MAX = 20_000  # blobs a thread remembers from its reads (see read_blobs)
_RETRIES = 100  # Redis WATCH conflicts before a write gives up


def _name(*parts: str) -> str:
    """A state table's (or index's) SQL name, `kind:view[:suffix]`, quoted."""
    return quote(":".join(parts))


@dataclass(frozen=True)
class Watermark:
    """What a view's state was bootstrapped from: silver version and event time."""

    source_version: int
    as_of_us: int


@dataclass(frozen=True)
class StateWrite:
    """New events of one view (idempotent per id), each entity's prune cutoff,
    and whether to index the events for their later labels. `frames`: blobs the
    writer already parsed (read for the features), so an entity's state found
    unchanged in the transaction is not parsed again."""

    view: str
    events: Sequence[tuple[str, Event]]
    prune: Mapping[str, int]
    indexed: bool = False
    frames: Mapping[bytes | str, Frame] = field(default_factory=dict)


@dataclass(frozen=True)
class Located:
    """Where an event's label goes: the entity of a view, and the event time."""

    entity: str
    ts_us: int


class EventState(Protocol):
    """Where aggregation state lives; thread-safe, shared by processes."""

    def read(
        self, view: str, entities: Sequence[str], *, label_index: int | None
    ) -> list[list[Event]]:
        """Each entity's events (labels merged at `label_index`), sorted by key."""
        ...

    def read_blobs(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[str, bytes | str | None]]:
        """Each entity's state blob (None: no state) and where it lives (for
        errors); decoded by the caller (`aistack.features.blob`)."""
        ...

    def write(
        self,
        view: str,
        events: Sequence[tuple[str, Event]],
        prune: Mapping[str, int],
        *,
        indexed: bool = False,
    ) -> None:
        """Add events (idempotent per id); drop an entity's events before its cutoff;
        `indexed`: also remember each event's entity for its later label."""
        ...

    def write_views(self, changes: Sequence[StateWrite]) -> None:
        """Several views' writes in one transaction."""
        ...

    def write_labels(
        self, view: str, labels: Sequence[tuple[str, Value, int, float]]
    ) -> None:
        """Upsert (entity, event id, event time, label)."""
        ...

    def index(self, view: str, events: Sequence[tuple[Value, str, int]]) -> None:
        """Remember (event id, entity, event time) so a later label finds its entity."""
        ...

    def locate(self, view: str, ids: Sequence[Value]) -> dict[str, Located]:
        """Entity and time of known event ids (keyed by `str(id)`)."""
        ...

    def watermark(self, view: str) -> Watermark | None:
        """What the view was last bootstrapped from."""
        ...

    def set_watermark(self, view: str, mark: Watermark) -> None:
        """Record a bootstrap."""
        ...

    def clear(self, view: str) -> None:
        """Forget the view's events, labels and index (before a bootstrap as of)."""
        ...

    def erase(
        self, view: str, entities: Sequence[str], events: Sequence[tuple[str, Value]]
    ) -> int:
        """Forget whole `entities` and the (entity, event id) `events`, with their
        labels and index entries (right to erasure); events removed."""
        ...

    def size(self, view: str, entity: str) -> int:
        """Events held for one entity (tests, diagnostics)."""
        ...

    def ping(self) -> bool:
        """Whether the state answers."""
        ...


Blob = bytes | str | None
Edit = Callable[[Sequence[str], Sequence[Blob], Sequence[str]], list[Blob]]
"""(entities, their blobs or None, where each lives for errors) -> each new
blob, None to delete it, or the same object when nothing changed (no write)."""


def _each(edit: Callable[[str, Blob, str], Blob]) -> Edit:
    """The batch edit of a per-entity one."""

    def many(
        entities: Sequence[str], blobs: Sequence[Blob], wheres: Sequence[str]
    ) -> list[Blob]:
        return [edit(*item) for item in zip(entities, blobs, wheres, strict=True)]

    return many


def _edits(change: StateWrite) -> tuple[list[str], Edit]:
    """The entities a write touches and what it does to each one's state (the
    whole batch at once: `add_events_many`)."""
    added: dict[str, list[Event]] = {}
    for entity, e in change.events:
        added.setdefault(entity, []).append(e)

    def edit(
        entities: Sequence[str], blobs: Sequence[Blob], wheres: Sequence[str]
    ) -> list[Blob]:
        return add_events_many(
            blobs,
            [added.get(entity, ()) for entity in entities],
            [change.prune.get(entity) for entity in entities],
            wheres=wheres,
            parsed=change.frames,
        )

    return list(dict.fromkeys([*added, *change.prune])), edit


def _label_edit(
    labels: Sequence[tuple[str, Value, int, float]],
) -> tuple[dict[str, list[tuple[Value, int, float]]], Edit]:
    by_entity: dict[str, list[tuple[Value, int, float]]] = {}
    for entity, ident, ts, value in labels:
        by_entity.setdefault(entity, []).append((ident, ts, float(value)))

    def edit(entity: str, blob: Blob, where: str) -> Blob:
        state = EntityState() if blob is None else decode(blob, where=where)
        for ident, ts, value in by_entity[entity]:
            state.label(ident, ts, value)
        return encode(state) if state.events or state.labels else None

    return by_entity, _each(edit)


def _erase_edit(
    entities: Sequence[str], events: Sequence[tuple[str, Value]]
) -> tuple[list[str], Edit, dict[str, list[str]]]:
    """The entities an erasure touches, its edit, and (filled by the edit) the
    ids of the events it removed per entity (a retried edit overwrites them)."""
    wanted: dict[str, set[str] | None] = dict.fromkeys(entities)
    for entity, ident in events:
        held = wanted.setdefault(entity, set())
        if held is not None:
            held.add(str(ident))
    removed: dict[str, list[str]] = {}

    def edit(entity: str, blob: Blob, where: str) -> Blob:
        if blob is None:
            removed[entity] = []
            return blob
        state = decode(blob, where=where)
        removed[entity] = state.forget(wanted[entity])
        return encode(state) if state.events or state.labels else None

    return list(wanted), _each(edit), removed


def _erased_ids(
    removed: Mapping[str, list[str]], events: Sequence[tuple[str, Value]]
) -> list[str]:
    """Index entries to drop: every removed event, and every named one."""
    return sorted(
        {i for ids in removed.values() for i in ids} | {str(i) for _, i in events}
    )


def _events(
    blobs: Sequence[tuple[str, Blob]], label_index: int | None
) -> list[list[Event]]:
    return [
        [] if blob is None else events_of(blob, where=at, label_index=label_index)
        for at, blob in blobs
    ]


class _Checkpointer:
    """Copies a database's WAL back into it from a daemon thread of this process
    (`PRAGMA wal_checkpoint(PASSIVE)`: readers and writers go on meanwhile).

    Woken every `every` commits; a commit that finds it `lag` commits behind
    (the thread starved or gone) checkpoints inline, so the WAL stays bounded.
    """

    every = 200
    lag = 20_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._commits = 0
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits >= self.lag:
            self._checkpoint()
        elif self._commits % self.every == 0:
            self._wake.set()

    def _checkpoint(self) -> None:
        self._commits = 0
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as con:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the next wake-up tries again
            log.warning("online state %s: checkpoint failed: %s", self.path, exc)

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._commits:
                self._checkpoint()


class SQLiteEventState:
    """Tables `st:<view>` (entity -> state blob) and `ix:<view>` (event id ->
    entity, for labels).

    Writers (threads and processes: server workers, stream consumers) queue on
    an exclusive `flock` of `<file>.lock` before `BEGIN IMMEDIATE`: the kernel
    hands the lock over as soon as it is released, where SQLite's own busy
    handler sleeps 1 to 100 ms between retries (the ~1 s tails measured with
    two workers). Readers never wait (WAL).
    """

    index_seconds = INDEX_SECONDS
    index_prune_every = 10_000  # rows indexed between two prunings of a view

    def __init__(self, path: Path, *, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        self._indexed: dict[str, int] = {}  # rows indexed since the last pruning
        self._local = threading.local()
        self._made: set[str] = set()
        self._mutex = threading.Lock()
        self._lock_file: tuple[int, int] | None = None  # (pid, fd)
        self._checkpointer: _Checkpointer | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        old = con.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'agg:%' LIMIT 1"
        ).fetchone()
        if old is not None:
            msg = (
                f"online state {path}: table {old[0]!r} holds rows per event "
                "(format 1); this version keeps one blob per entity: "
                f"delete {path} and run `aistack materialize`"
            )
            raise ConfigError(msg)
        con.execute(
            "CREATE TABLE IF NOT EXISTS aistack_watermarks "
            "(view TEXT PRIMARY KEY, source_version INTEGER, as_of_us INTEGER)"
        )

    def _connect(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            # State is rebuilt from silver by `materialize`: a power cut may lose
            # the last commits, never corrupt the file.
            con.execute("PRAGMA synchronous=NORMAL")
            # the WAL is copied back by this process's checkpointer thread, not
            # by whichever commit crosses 1,000 pages (that commit paid the copy
            # and its fsync: half the cost of a request's write, measured)
            con.execute("PRAGMA wal_autocheckpoint=0")
            # 64 MiB of pages (SQLite's default: 2 MiB) hold a state of 15,000
            # entities (46 MB, the real-time benchmark's larger workspace): a
            # 500-event state write 39-42 -> 28-30 us an event, a read 11.5 ->
            # 9; the cache fills only as far as the file is large
            con.execute("PRAGMA cache_size=-65536")
            self._local.con = con
        return con

    def _committed(self) -> None:
        """After a commit: wake the checkpointer now and then (inline if it lags)."""
        checkpointer = self._checkpointer
        if checkpointer is None or checkpointer.pid != os.getpid():
            checkpointer = self._checkpointer = _Checkpointer(self.path)
        checkpointer.committed()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, writers queued on the lock file (see above)."""
        with self._mutex:
            if self._lock_file is None or self._lock_file[0] != os.getpid():
                fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                self._lock_file = (os.getpid(), fd)
            fd = self._lock_file[1]
            fcntl.flock(fd, fcntl.LOCK_EX)
            con = self._connect()
            local = self._local
            local.written = []
            try:
                con.execute("BEGIN IMMEDIATE")
                yield con
                con.execute("COMMIT")
            except BaseException as exc:
                local.seen = None  # what this thread read may not hold any more
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    msg = f"sqlite at {self.path}: {exc}"
                    raise StoreUnavailableError(msg) from exc
                raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            seen = getattr(local, "seen", None)
            if seen is not None:  # our own commit leaves data_version as it was
                for view, entity, blob in local.written:
                    seen[view, entity] = blob
            self._committed()

    def _tables(self, view: str) -> sqlite3.Connection:
        con = self._connect()
        if view not in self._made:
            for ddl in (
                # a rowid table: a blob (KBs) fits in its leaf page, where a
                # WITHOUT ROWID one overflows past ~1 KB; updated in place by
                # an upsert (measured 100-240 -> 35-125 us a write transaction)
                f"CREATE TABLE IF NOT EXISTS {_name('st', view)} "
                "(entity TEXT PRIMARY KEY, state BLOB NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {_name('ix', view)} "
                "(id TEXT PRIMARY KEY, entity TEXT, ts_us INTEGER) WITHOUT ROWID",
                # the index's pruning deletes by time (`_prune_index`)
                f"CREATE INDEX IF NOT EXISTS {_name('ix', view, 'ts')} "
                f"ON {_name('ix', view)} (ts_us)",
            ):
                con.execute(ddl)
            self._made.add(view)
        return con

    def _blobs(
        self, con: sqlite3.Connection, view: str, entities: Sequence[str]
    ) -> Iterator[tuple[str, bytes]]:
        """(entity, state blob) of the held ones among `entities`."""
        for start in range(0, len(entities), _CHUNK):
            chunk = entities[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from con.execute(
                f"SELECT entity, state FROM {_name('st', view)} "
                f"WHERE entity IN ({marks})",
                chunk,
            )

    def read(
        self, view: str, entities: Sequence[str], *, label_index: int | None
    ) -> list[list[Event]]:
        """Each entity's events (labels merged at `label_index`), sorted by key."""
        return _events(self.read_blobs(view, entities), label_index)

    def read_blobs(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[str, bytes | str | None]]:
        """Each entity's state blob (None: no state) and where it lives.

        The blobs read are remembered by this thread with the database's
        `data_version` (read first): a write transaction that finds no other
        connection committed since then edits them without reading them again.
        """
        view = f"{self.namespace}.{view}"
        con = self._tables(view)
        keys = list(dict.fromkeys(entities))
        try:
            version = con.execute("PRAGMA data_version").fetchone()[0]
            found = dict(self._blobs(con, view, keys))
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite at {self.path}: {exc}") from exc
        local = self._local
        seen: dict[tuple[str, str], Blob] | None = getattr(local, "seen", None)
        if seen is None or local.version != version or len(seen) > _SEEN_MAX:
            seen = local.seen = {}
            local.version = version
        for e in keys:
            seen[view, e] = found.get(e)
        return [(f"{self.path} {view} {e}", found.get(e)) for e in entities]

    def _current(
        self, con: sqlite3.Connection, view: str, entities: Sequence[str]
    ) -> dict[str, Blob]:
        """Each entity's blob inside a write transaction: as this thread read it
        when no other connection has committed since, else read again."""
        local = self._local
        seen: dict[tuple[str, str], Blob] | None = getattr(local, "seen", None)
        if seen is not None and all((view, e) in seen for e in entities):
            version = con.execute("PRAGMA data_version").fetchone()[0]
            if version == local.version:
                return {e: seen[view, e] for e in entities}
        return dict(self._blobs(con, view, entities))

    def _update(
        self, con: sqlite3.Connection, view: str, entities: Sequence[str], edit: Edit
    ) -> None:
        """Read, edit and write back each entity's state (inside a transaction)."""
        found = self._current(con, view, entities)
        put, drop = [], []
        written: list[tuple[str, str, Blob]] = self._local.written
        blobs = [found.get(entity) for entity in entities]
        wheres = [f"{self.path} {view} {entity}" for entity in entities]
        for entity, blob, new in zip(
            entities, blobs, edit(entities, blobs, wheres), strict=True
        ):
            if new is blob:
                continue
            written.append((view, entity, new))
            if new is None:
                drop.append((entity,))
            else:
                put.append((entity, new))
        if put:
            con.executemany(
                f"INSERT INTO {_name('st', view)} VALUES (?, ?) "
                "ON CONFLICT (entity) DO UPDATE SET state = excluded.state",
                put,
            )
        if drop:
            con.executemany(f"DELETE FROM {_name('st', view)} WHERE entity = ?", drop)

    def write(
        self,
        view: str,
        events: Sequence[tuple[str, Event]],
        prune: Mapping[str, int],
        *,
        indexed: bool = False,
    ) -> None:
        """Add events (idempotent per id); drop an entity's events before its cutoff;
        `indexed`: also remember each event's entity for its later label."""
        self.write_views([StateWrite(view, events, prune, indexed)])

    def write_views(self, changes: Sequence[StateWrite]) -> None:
        """Several views' writes in one transaction."""
        views = [f"{self.namespace}.{c.view}" for c in changes]
        for view in views:
            self._tables(view)
        with self._writing() as con:
            for view, change in zip(views, changes, strict=True):
                touched, edit = _edits(change)
                self._update(con, view, touched, edit)
                if change.indexed:
                    con.executemany(
                        f"INSERT OR IGNORE INTO {_name('ix', view)} VALUES (?, ?, ?)",
                        [(str(e.id), ent, e.ts_us) for ent, e in change.events],
                    )
                    self._prune_index(con, view, len(change.events))

    def write_labels(
        self, view: str, labels: Sequence[tuple[str, Value, int, float]]
    ) -> None:
        """Upsert (entity, event id, event time, label)."""
        view = f"{self.namespace}.{view}"
        self._tables(view)
        by_entity, edit = _label_edit(labels)
        with self._writing() as con:
            self._update(con, view, list(by_entity), edit)

    def index(self, view: str, events: Sequence[tuple[Value, str, int]]) -> None:
        """Remember (event id, entity, event time) so a later label finds its entity."""
        view = f"{self.namespace}.{view}"
        self._tables(view)
        rows = [(str(i), ent, ts) for i, ent, ts in events]
        with self._writing() as con:
            con.executemany(
                f"INSERT OR IGNORE INTO {_name('ix', view)} VALUES (?, ?, ?)", rows
            )
            self._prune_index(con, view, len(rows))

    def _prune_index(self, con: sqlite3.Connection, view: str, added: int) -> None:
        """Every `index_prune_every` rows this process indexed in a view, delete
        its rows older than `index_seconds` before the newest (in event time;
        the 1,000th newest, so that a few events from a wrong future cannot
        empty it): the label index stays bounded, as Redis's keys expire."""
        count = self._indexed.get(view, 0) + added
        if count < self.index_prune_every:
            self._indexed[view] = count
            return
        self._indexed[view] = 0
        newest = con.execute(
            f"SELECT ts_us FROM {_name('ix', view)} ORDER BY ts_us DESC LIMIT 1 OFFSET "
            f"{_PRUNE_OUTLIERS}"
        ).fetchone()
        if newest is not None:
            con.execute(
                f"DELETE FROM {_name('ix', view)} WHERE ts_us < ?",
                (newest[0] - self.index_seconds * 1_000_000,),
            )

    def locate(self, view: str, ids: Sequence[Value]) -> dict[str, Located]:
        """Entity and time of known event ids (keyed by `str(id)`)."""
        view = f"{self.namespace}.{view}"
        con = self._tables(view)
        found: dict[str, Located] = {}
        keys = [str(i) for i in ids]
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for ident, entity, ts in con.execute(
                f"SELECT id, entity, ts_us FROM {_name('ix', view)} "
                f"WHERE id IN ({marks})",
                chunk,
            ):
                found[ident] = Located(entity, int(ts))
        return found

    def watermark(self, view: str) -> Watermark | None:
        """What the view was last bootstrapped from."""
        view = f"{self.namespace}.{view}"
        row = (
            self._connect()
            .execute(
                "SELECT source_version, as_of_us FROM aistack_watermarks "
                "WHERE view = ?",
                (view,),
            )
            .fetchone()
        )
        return None if row is None else Watermark(int(row[0]), int(row[1]))

    def set_watermark(self, view: str, mark: Watermark) -> None:
        """Record a bootstrap."""
        view = f"{self.namespace}.{view}"
        self._connect().execute(
            "INSERT OR REPLACE INTO aistack_watermarks VALUES (?, ?, ?)",
            (view, mark.source_version, mark.as_of_us),
        )

    def clear(self, view: str) -> None:
        """Forget the view's events, labels and index (before a bootstrap as of)."""
        view = f"{self.namespace}.{view}"
        con = self._tables(view)
        self._local.seen = None  # this connection's own change: data_version stays
        for table in ("st", "ix"):
            con.execute(f"DELETE FROM {_name(table, view)}")
        con.execute("DELETE FROM aistack_watermarks WHERE view = ?", (view,))

    def erase(
        self, view: str, entities: Sequence[str], events: Sequence[tuple[str, Value]]
    ) -> int:
        """Forget whole `entities` and the (entity, event id) `events`, with their
        labels and index entries, in one transaction; events removed."""
        view = f"{self.namespace}.{view}"
        self._tables(view)
        touched, edit, removed = _erase_edit(entities, events)
        with self._writing() as con:
            self._update(con, view, touched, edit)
            con.executemany(
                f"DELETE FROM {_name('ix', view)} WHERE id = ?",
                [(i,) for i in _erased_ids(removed, events)],
            )
        return sum(len(ids) for ids in removed.values())

    def size(self, view: str, entity: str) -> int:
        """Events held for one entity (tests, diagnostics)."""
        return len(self.read(view, [entity], label_index=None)[0])

    def ping(self) -> bool:
        """Whether the database file answers a query."""
        try:
            self._connect().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True


class RedisEventState:
    """Keys `<p>:state:<view>:<entity>` (the entity's state blob) and
    `<p>:ix:<view>:<event id>` (its entity, for a later label).

    A write WATCHes the keys it touches, reads them, and writes them back in
    MULTI/EXEC, retried when another writer changed one in between. Index keys
    expire after `index_seconds` (a label arriving later than that finds no
    event).
    """

    def __init__(
        self, url: str, *, prefix: str, index_seconds: int = INDEX_SECONDS
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.index_seconds = index_seconds
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2
        )
        self._checked = False

    def _k(self, kind: str, view: str, entity: str) -> str:
        return f"{self.prefix}:{kind}:{view}:{entity}"

    def _check_format(self) -> None:
        """Refuse a state of the former layout (hashes per entity, format 1)."""
        if self._checked:
            return
        key = f"{self.prefix}:state_format"
        if self.client.get(key) is None:
            old = f"{self.prefix}:agg:*"
            cursor, found = self.client.scan(0, match=old, count=1000)
            while not found and cursor:
                cursor, found = self.client.scan(cursor, match=old, count=1000)
            if found:
                msg = (
                    f"online state at {self.url}: key {found[0]!r} holds "
                    "events per hash field (format 1); this version keeps one blob "
                    f"per entity: delete the {self.prefix}:* keys and "
                    "run `aistack materialize`"
                )
                raise ConfigError(msg)
            self.client.set(key, 2)
        self._checked = True

    def read(
        self, view: str, entities: Sequence[str], *, label_index: int | None
    ) -> list[list[Event]]:
        """Each entity's events (labels merged at `label_index`), sorted by key."""
        return _events(self.read_blobs(view, entities), label_index)

    def read_blobs(
        self, view: str, entities: Sequence[str]
    ) -> list[tuple[str, bytes | str | None]]:
        """Each entity's state blob (None: no state) and its key."""
        self._check_format()
        keys = [self._k("state", view, e) for e in entities]
        try:
            found = self.client.mget(keys) if keys else []
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis at {self.url}: {exc}") from exc
        return list(zip(keys, found, strict=True))

    def _update(
        self,
        edits: Sequence[tuple[str, Sequence[str], Edit]],
        extra: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> None:
        """Read, edit and write back states of (view, entities, edit) atomically."""
        self._check_format()
        names = [
            self._k("state", view, e) for view, entities, _ in edits for e in entities
        ]
        for attempt in range(_RETRIES):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    if names:
                        pipe.watch(*names)  # type: ignore[no-untyped-call]
                    found = pipe.mget(names) if names else []
                    pipe.multi()
                    at = 0
                    for _, entities, edit in edits:
                        names_of = names[at : at + len(entities)]
                        blobs = found[at : at + len(entities)]
                        at += len(entities)
                        for key, blob, new in zip(
                            names_of,
                            blobs,
                            edit(entities, blobs, names_of),
                            strict=True,
                        ):
                            if new is blob:
                                continue
                            if new is None:
                                pipe.delete(key)
                            else:
                                pipe.set(key, new)
                    if extra is not None:
                        extra(pipe)
                    pipe.execute()
                    return
                except redis.WatchError:
                    # another writer won this round: back off a random while
                    # (growing, capped) so a slower writer is not starved
                    time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
                    continue
                except redis.RedisError as exc:
                    raise StoreUnavailableError(f"redis at {self.url}: {exc}") from exc
        msg = (
            f"redis at {self.url}: {len(names)} states were changed by other "
            f"writers {_RETRIES} times in a row"
        )
        raise StoreUnavailableError(msg)

    def write(
        self,
        view: str,
        events: Sequence[tuple[str, Event]],
        prune: Mapping[str, int],
        *,
        indexed: bool = False,
    ) -> None:
        """Add events (idempotent per id); drop an entity's events before its cutoff;
        `indexed`: also remember each event's entity for its later label."""
        self.write_views([StateWrite(view, events, prune, indexed)])

    def write_views(self, changes: Sequence[StateWrite]) -> None:
        """Several views' writes in one MULTI/EXEC."""
        edits = []
        for change in changes:
            touched, edit = _edits(change)
            edits.append((change.view, touched, edit))

        def index(pipe: redis.client.Pipeline) -> None:
            for change in changes:
                if change.indexed:
                    for entity, e in change.events:
                        self._index_one(pipe, change.view, e.id, entity, e.ts_us)

        self._update(edits, index)

    def write_labels(
        self, view: str, labels: Sequence[tuple[str, Value, int, float]]
    ) -> None:
        """Upsert (entity, event id, event time, label)."""
        by_entity, edit = _label_edit(labels)
        entities = list(by_entity)
        for start in range(0, len(entities), 10_000):
            self._update([(view, entities[start : start + 10_000], edit)])

    def index(self, view: str, events: Sequence[tuple[Value, str, int]]) -> None:
        """Remember (event id, entity, event time) so a later label finds its entity."""
        pipe = self.client.pipeline(transaction=False)
        for n, (ident, entity, ts) in enumerate(events, 1):
            self._index_one(pipe, view, ident, entity, ts)
            if n % 10_000 == 0:
                pipe.execute()
        pipe.execute()

    def _index_one(
        self, pipe: redis.client.Pipeline, view: str, ident: Value, entity: str, ts: int
    ) -> None:
        pipe.set(
            self._k("ix", view, str(ident)),
            orjson.dumps([entity, ts]),
            ex=self.index_seconds,
            nx=True,
        )

    def locate(self, view: str, ids: Sequence[Value]) -> dict[str, Located]:
        """Entity and time of known event ids (keyed by `str(id)`)."""
        keys = [str(i) for i in ids]
        if not keys:
            return {}
        found = self.client.mget([self._k("ix", view, k) for k in keys])
        out = {}
        for key, blob in zip(keys, found, strict=True):
            if blob is not None:
                entity, ts = orjson.loads(blob)
                out[key] = Located(str(entity), int(ts))
        return out

    def watermark(self, view: str) -> Watermark | None:
        """What the view was last bootstrapped from."""
        version, as_of = self.client.hmget(
            f"{self.prefix}:watermark:{view}", ["version", "as_of"]
        )
        if version is None or as_of is None:
            return None
        return Watermark(int(version), int(as_of))

    def set_watermark(self, view: str, mark: Watermark) -> None:
        """Record a bootstrap."""
        self.client.hset(
            f"{self.prefix}:watermark:{view}",
            mapping={"version": mark.source_version, "as_of": mark.as_of_us},
        )

    def clear(self, view: str) -> None:
        """Forget the view's events, labels and index (before a bootstrap as of)."""
        for kind in ("state", "ix"):
            batch: list[bytes] = []
            for key in self.client.scan_iter(f"{self.prefix}:{kind}:{view}:*", 1000):
                batch.append(key)
                if len(batch) >= 1000:  # noqa: PLR2004
                    self.client.delete(*batch)
                    batch = []
            if batch:
                self.client.delete(*batch)
        self.client.delete(f"{self.prefix}:watermark:{view}")

    def erase(
        self, view: str, entities: Sequence[str], events: Sequence[tuple[str, Value]]
    ) -> int:
        """Forget whole `entities` and the (entity, event id) `events`, with their
        labels and index keys, in one MULTI/EXEC; events removed."""
        touched, edit, removed = _erase_edit(entities, events)

        def unindex(pipe: redis.client.Pipeline) -> None:
            for ident in _erased_ids(removed, events):
                pipe.delete(self._k("ix", view, ident))

        self._update([(view, touched, edit)], unindex)
        return sum(len(ids) for ids in removed.values())

    def size(self, view: str, entity: str) -> int:
        """Events held for one entity (tests, diagnostics)."""
        return len(self.read(view, [entity], label_index=None)[0])

    def ping(self) -> bool:
        """Whether the server answers PING."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


def open_event_state(url: str | None, workspace: Path, use_case: str) -> EventState:
    """The state named by `url` (`redis://...`), or SQLite in the workspace."""
    if url is None or url.startswith("sqlite"):
        base = Path(url.removeprefix("sqlite:///")) if url else workspace / "online.db"
        return SQLiteEventState(
            base.with_name(base.stem + "-events.db"), namespace=use_case
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisEventState(url, prefix=f"aistack:{use_case}")
    msg = f"online_url: {url!r} is not sqlite:///PATH or redis://HOST:PORT"
    raise ConfigError(msg)
