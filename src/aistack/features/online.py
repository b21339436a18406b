"""Online feature store of SQL views: the latest value of each view per entity.

SQL views are batch-only: served as of their last materialization. Aggregation
views are computed per request from the aggregation state instead
(`aistack.features.state`, `aistack.features.realtime`).

SQLite (embedded default, a file in the workspace) or Redis (`redis://` URL). Both
hold, per view and entity, the feature values, their event time and the gold
version they came from. Materialization is incremental: only entities whose gold
rows were written since the last materialized version are read and upserted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow as pa
import redis

from aistack.contract import FeatureView, UseCase
from aistack.errors import ConfigError, StoreUnavailableError
from aistack.features.gold import EVENT_TIME, WRITTEN_AT
from aistack.lake.delta import Lake
from aistack.sql import quote

_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class OnlineRow:
    """One entity's latest features in a view."""

    event_time_us: int
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class ViewState:
    """Which gold version a view's online values reflect."""

    gold_version: int
    written_at_us: int


class OnlineStore(Protocol):
    """Where served features live; implementations must be thread-safe for reads."""

    def get(self, view: str, entities: Sequence[object]) -> list[OnlineRow | None]:
        """Rows for `entities` of `view`, None where an entity is unknown."""
        ...

    def put(self, view: str, rows: Iterable[tuple[object, OnlineRow]]) -> int:
        """Upsert rows; returns how many were written."""
        ...

    def delete(self, view: str, entities: Sequence[object]) -> int:
        """Erase the rows of `entities` (right to erasure); returns how many."""
        ...

    def state(self, view: str) -> ViewState | None:
        """The gold version a view was last materialized from."""
        ...

    def set_state(self, view: str, state: ViewState) -> None:
        """Record the gold version a view now reflects."""
        ...

    def ping(self) -> bool:
        """Whether the store answers."""
        ...


def _key(entity: object) -> str:
    return str(entity)


class SQLiteStore:
    """A SQLite file: one table of (entity, JSON row) per view."""

    def __init__(self, path: Path, *, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS aistack_state (view TEXT PRIMARY KEY, "
                "gold_version INTEGER, written_at_us INTEGER)"
            )

    def _connect(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
        return con

    def _table(self, view: str) -> str:
        con = self._connect()
        con.execute(
            f'CREATE TABLE IF NOT EXISTS "{view}" '
            "(entity TEXT PRIMARY KEY, row BLOB NOT NULL) WITHOUT ROWID"
        )
        return f'"{view}"'

    def get(self, view: str, entities: Sequence[object]) -> list[OnlineRow | None]:
        """Rows for `entities` of `view`, None where an entity is unknown."""
        view = f"{self.namespace}.{view}"
        con = self._connect()
        keys = [_key(e) for e in entities]
        try:
            if len(keys) == 1:
                found = con.execute(
                    f'SELECT entity, row FROM "{view}" WHERE entity = ?', keys
                ).fetchall()
            else:
                marks = ",".join("?" * len(keys))
                found = con.execute(
                    f'SELECT entity, row FROM "{view}" WHERE entity IN ({marks})', keys
                ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return [None] * len(keys)
            raise StoreUnavailableError(f"sqlite at {self.path}: {exc}") from exc
        rows = {k: _decode(blob) for k, blob in found}
        return [rows.get(k) for k in keys]

    def put(self, view: str, rows: Iterable[tuple[object, OnlineRow]]) -> int:
        """Upsert rows in one transaction; returns how many were written."""
        view = f"{self.namespace}.{view}"
        table = self._table(view)
        data = [(_key(e), _encode(r)) for e, r in rows]
        con = self._connect()
        con.execute("BEGIN")
        con.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", data)
        con.execute("COMMIT")
        return len(data)

    def delete(self, view: str, entities: Sequence[object]) -> int:
        """Erase the rows of `entities`, overwriting the freed pages (secure_delete)
        and truncating the write-ahead log; returns how many rows went."""
        if not entities:
            return 0
        view = f"{self.namespace}.{view}"
        table = self._table(view)
        con = self._connect()
        con.execute("PRAGMA secure_delete = ON")
        marks = ",".join("?" * len(entities))
        gone = con.execute(
            f"DELETE FROM {table} WHERE entity IN ({marks})",
            [_key(e) for e in entities],
        ).rowcount
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(gone)

    def state(self, view: str) -> ViewState | None:
        """The gold version a view was last materialized from."""
        view = f"{self.namespace}.{view}"
        found = (
            self._connect()
            .execute(
                "SELECT gold_version, written_at_us FROM aistack_state WHERE view = ?",
                [view],
            )
            .fetchone()
        )
        return None if found is None else ViewState(int(found[0]), int(found[1]))

    def set_state(self, view: str, state: ViewState) -> None:
        """Record the gold version a view now reflects."""
        view = f"{self.namespace}.{view}"
        self._connect().execute(
            "INSERT OR REPLACE INTO aistack_state VALUES (?, ?, ?)",
            [view, state.gold_version, state.written_at_us],
        )

    def ping(self) -> bool:
        """Whether the database file answers a query."""
        try:
            self._connect().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True


class RedisStore:
    """Redis: one key per (view, entity) holding the row; MGET reads in one trip."""

    def __init__(self, url: str, *, prefix: str = "aistack") -> None:
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )

    def _k(self, view: str, entity: object) -> str:
        return f"{self.prefix}:{view}:{_key(entity)}"

    def get(self, view: str, entities: Sequence[object]) -> list[OnlineRow | None]:
        """Rows for `entities` of `view`, None where an entity is unknown."""
        try:
            found = self.client.mget([self._k(view, e) for e in entities])
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis at {self.url}: {exc}") from exc
        return [None if blob is None else _decode(blob) for blob in found]

    def put(self, view: str, rows: Iterable[tuple[object, OnlineRow]]) -> int:
        """Upsert rows through a pipeline; returns how many were written."""
        count = 0
        pipe = self.client.pipeline(transaction=False)
        for entity, row in rows:
            pipe.set(self._k(view, entity), _encode(row))
            count += 1
            if count % 10_000 == 0:
                pipe.execute()
        pipe.execute()
        return count

    def delete(self, view: str, entities: Sequence[object]) -> int:
        """Erase the rows of `entities`; returns how many keys went."""
        if not entities:
            return 0
        return int(self.client.delete(*(self._k(view, e) for e in entities)))

    def state(self, view: str) -> ViewState | None:
        """The gold version a view was last materialized from."""
        gold, written = self.client.hmget(
            f"{self.prefix}:state:{view}", ["gold", "written"]
        )
        if gold is None or written is None:
            return None
        return ViewState(int(gold), int(written))

    def set_state(self, view: str, state: ViewState) -> None:
        """Record the gold version a view now reflects."""
        self.client.hset(
            f"{self.prefix}:state:{view}",
            mapping={"gold": state.gold_version, "written": state.written_at_us},
        )

    def ping(self) -> bool:
        """Whether the server answers PING."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


def _encode(row: OnlineRow) -> bytes:
    return orjson.dumps([row.event_time_us, list(row.values)])


def _decode(blob: bytes | str) -> OnlineRow:
    event_time, values = orjson.loads(blob)
    return OnlineRow(int(event_time), tuple(values))


def open_store(url: str | None, workspace: Path, use_case: str) -> OnlineStore:
    """The store named by `url` (`redis://...`), or SQLite in the workspace."""
    if url is None or url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///")) if url else workspace / "online.db"
        return SQLiteStore(path, namespace=use_case)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, prefix=f"aistack:{use_case}")
    msg = f"online_url: {url!r} is not sqlite:///PATH or redis://HOST:PORT"
    raise ConfigError(msg)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of a naive (UTC) or aware datetime."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class MaterializeResult:
    """What one view's materialization did."""

    view: str
    gold_version: int
    entities: int
    skipped: bool


def materialize_view(
    lake: Lake, store: OnlineStore, use_case: UseCase, view: FeatureView
) -> MaterializeResult:
    """Upsert the latest row of every entity written since the last materialization."""
    table = use_case.gold_table(view)
    version = lake.version(table)
    if version is None:
        msg = f"{table} does not exist yet: run the gold stage first"
        raise ConfigError(msg)
    state = store.state(view.name)
    if state is not None and state.gold_version == version:
        return MaterializeResult(view.name, version, 0, skipped=True)
    since = state.written_at_us if state is not None else -1
    con = lake.connect({table: version})
    entity = quote(view.entity)
    features = ", ".join(quote(f) for f in view.feature_names)
    latest: pa.Table = con.sql(
        f"WITH changed AS (SELECT DISTINCT {entity} FROM {table} "
        f"WHERE epoch_us({WRITTEN_AT}) > $since) "
        f"SELECT {entity}, epoch_us({EVENT_TIME}) AS t, {features}, "
        f"epoch_us(max({WRITTEN_AT}) OVER ()) AS w FROM {table} SEMI JOIN changed "
        f"USING ({view.entity}) QUALIFY row_number() OVER (PARTITION BY {entity} "
        f"ORDER BY {EVENT_TIME} DESC, {WRITTEN_AT} DESC) = 1",
        params={"since": since},
    ).to_arrow_table()
    columns = latest.to_pydict()
    names = view.feature_names
    rows = (
        (key, OnlineRow(t, tuple(columns[f][i] for f in names)))
        for i, (key, t) in enumerate(
            zip(columns[view.entity], columns["t"], strict=True)
        )
    )
    count = store.put(view.name, rows)
    written = max(columns["w"], default=since)
    store.set_state(view.name, ViewState(version, max(written, since)))
    return MaterializeResult(view.name, version, count, skipped=False)


def materialize(
    lake: Lake, store: OnlineStore, use_case: UseCase
) -> list[MaterializeResult]:
    """Materialize every SQL feature view of `use_case`."""
    return [
        materialize_view(lake, store, use_case, v)
        for v in use_case.views
        if isinstance(v, FeatureView)
    ]


def versions(store: OnlineStore, views: Iterable[str]) -> Mapping[str, int]:
    """Gold version each view's online values reflect (absent: never materialized)."""
    found = {v: store.state(v) for v in views}
    return {v: s.gold_version for v, s in found.items() if s is not None}
