"""Online aggregation state: one binary blob per entity, updated in one
transaction per write, by concurrent writer processes (SQLite and Redis)."""

from __future__ import annotations

import gc
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
import weakref

import pytest
import redis

import aistack.features.blob as blob_module
from aistack.contract import Value
from aistack.errors import ConfigError
from aistack.features.aggregations import Event
from aistack.features.blob import (
    EntityState,
    _appended,
    add_events,
    add_events_many,
    decode,
    encode,
    events_of,
    frame,
)
from aistack.features.state import SQLiteEventState, StateWrite, open_event_state
from servers import redis_server


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.db'}"
    else:
        with redis_server(tmp_path) as (url, _):
            yield url


def test_blob_round_trip_keeps_nulls_types_and_labels() -> None:
    state = EntityState()
    state.add(
        [
            Event(20, "b", (1.5, None, "x"), False),
            Event(10, 7, (None, 3, None), True),
            Event(10, 3.5, (2.0, -1, "y"), False),  # mixed ids: kept as given
        ]
    )
    state.label(7, 10, 1.0)
    back = decode(encode(state), where="test")
    assert back.events == state.events
    assert [type(e.id) for e in back.events] == [type(e.id) for e in state.events]
    assert back.labels == {"7": (7, 10, 1.0)}
    read = events_of(encode(state), where="test", label_index=1)
    assert [e.id for e in read] == [e.id for e in state.events]
    merged = {e.id: e.values for e in read}  # the label goes in at 1
    assert merged[7] == (None, 1.0, None) and merged["b"] == (1.5, None, "x")
    assert decode(encode(EntityState()), where="test") == EntityState()


def test_a_blob_of_another_format_is_refused_naming_it() -> None:
    blob = bytearray(encode(EntityState([Event(1, 1, (1.0,), False)])))
    blob[0] = 1
    with pytest.raises(ConfigError, match=r"state where-1: blob format 1, expected 3"):
        decode(bytes(blob), where="where-1")


def test_a_state_of_the_former_layout_is_refused(tmp_path) -> None:
    path = tmp_path / "online-events.db"
    with sqlite3.connect(path) as con:
        con.execute('CREATE TABLE "agg:fraud.v" (entity TEXT, id TEXT)')
    with pytest.raises(ConfigError, match=r"'agg:fraud.v' holds rows per event"):
        open_event_state(f"sqlite:///{tmp_path / 'online.db'}", tmp_path, "fraud")
    with redis_server(tmp_path) as (url, _):
        redis.Redis.from_url(url).hset("aistack:fraud:agg:v:1", "1", b"[]")
        state = open_event_state(url, tmp_path, "fraud")
        with pytest.raises(ConfigError, match="format 1"):
            state.read("v", ["1"], label_index=None)


def test_one_transaction_writes_every_view_and_prunes(state_url, tmp_path) -> None:
    state = open_event_state(state_url, tmp_path, "uc")
    state.write_views(
        [
            StateWrite("a", [("1", Event(10, 1, (1.0,)))], {}, indexed=True),
            StateWrite("b", [("9", Event(10, 1, (2.0,)))], {}),
        ]
    )
    state.write("a", [("1", Event(10, 1, (5.0,))), ("1", Event(30, 2, (3.0,)))], {})
    assert [e.values for e in state.read("a", ["1"], label_index=None)[0]] == [
        (1.0,),  # the retried id 1 kept its first values
        (3.0,),
    ]
    state.write_labels("a", [("1", 1, 10, 1.0)])
    assert state.read("a", ["1"], label_index=0)[0][0].values == (1.0,)
    assert state.locate("a", [1])["1"].entity == "1"
    state.write("a", [], {"1": 20})  # prune before t=20: event 1 and its label go
    assert [e.id for e in state.read("a", ["1"], label_index=0)[0]] == [2]
    assert state.size("b", "9") == 1 and state.size("b", "missing") == 0


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aistack.features.aggregations import Event
    from aistack.features.state import open_event_state
    url, folder, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    state = open_event_state(url, Path(folder), "uc")
    time.sleep(max(float(sys.argv[5]) - time.time(), 0))  # both start together
    for i in range(first, first + n):  # one read-modify-write per event
        if i % 2:  # as a server does: read for the features, then write
            state.read_blobs("v", ["hot"])
        state.write("v", [("hot", Event(i, i, (float(i),)))], {"hot": 0})
        state.write_labels("v", [("hot", i, i, 1.0)])
    """
)


def test_the_sqlite_label_index_forgets_events_older_than_its_horizon(
    tmp_path,
) -> None:
    """Bounded like Redis's expiring keys: rows 90 days older (event time) than
    the 1,000th newest are deleted; a few events from a wrong future do not
    move the horizon."""
    state = SQLiteEventState(tmp_path / "state.db", namespace="t")
    state.index_prune_every = 1  # prune at every write
    day = 86_400 * 1_000_000
    base = 1_700_000_000 * 1_000_000
    events = [(i, f"e{i % 7}", base + i * day // 10) for i in range(2000)]
    for start in range(0, 2000, 500):
        state.index("v", events[start : start + 500])
    future = [(10_000 + i, "e0", base + 3650 * day) for i in range(5)]
    state.index("v", future)
    # the 1,000th newest is event 1005 (100.5 days): 10.5 days and later stay
    found = state.locate("v", [i for i, _, _ in events + future])
    assert sorted(int(k) for k in found) == [*range(105, 2000), *range(10_000, 10_005)]
    assert found["105"].entity == "e0" and found["105"].ts_us == base + 105 * day // 10
    con = sqlite3.connect(tmp_path / "state.db")
    assert con.execute('SELECT count(*) FROM "ix:t.v"').fetchone()[0] == 1900
    # its connections keep 64 MiB of pages
    assert state._connect().execute("PRAGMA cache_size").fetchone()[0] == -65536


def test_two_writer_processes_on_one_entity_lose_nothing(state_url, tmp_path) -> None:
    n = 300
    start = str(time.time() + 5)  # after both processes have imported aistack
    args = [sys.executable, "-c", WRITER, state_url, str(tmp_path)]
    procs = [
        subprocess.Popen([*args, str(first), str(n), start]) for first in (0, 10_000)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    state = open_event_state(state_url, tmp_path, "uc")
    events = state.read("v", ["hot"], label_index=0)[0]
    assert len(events) == 2 * n
    assert {e.id for e in events} == set(range(n)) | set(range(10_000, 10_000 + n))
    assert all(e.values == (1.0,) for e in events)  # every label kept too


def test_a_write_after_a_read_sees_what_another_connection_wrote(tmp_path) -> None:
    """The blobs a thread read are reused by its write only while no other
    connection has committed (SQLite's data_version): a commit in between, by
    another connection or by this one's own write or clear, is never lost."""
    url = f"sqlite:///{tmp_path / 'online.db'}"
    mine, other = (open_event_state(url, tmp_path, "uc") for _ in range(2))

    def ids() -> list[Value]:
        return [e.id for e in mine.read("v", ["e"], label_index=None)[0]]

    mine.read_blobs("v", ["e"])  # remembered: no state yet
    other.write("v", [("e", Event(1, 1, (1.0,)))], {})
    mine.write("v", [("e", Event(2, 2, (2.0,)))], {})  # must read again
    assert ids() == [1, 2]
    mine.read_blobs("v", ["e"])
    mine.write("v", [("e", Event(3, 3, (3.0,)))], {})  # reuses its read
    mine.write("v", [("e", Event(4, 4, (4.0,)))], {})  # and its own write
    assert ids() == [1, 2, 3, 4]
    mine.read_blobs("v", ["e"])
    mine.clear("v")
    mine.write("v", [("e", Event(5, 5, (5.0,)))], {})
    assert ids() == [5]
    assert [e.id for e in other.read("v", ["e"], label_index=None)[0]] == [5]


def _random_events(rng: random.Random, n: int, *, kinds: str) -> list[Event]:
    """Events with ties on time, repeated ids, NULLs and, per `kinds`, values of
    mixed types (ints, floats, text) and text ids."""
    events = []
    for _ in range(n):
        ident: Value = rng.randrange(40)
        if "text-ids" in kinds and rng.random() < 0.3:
            ident = f"r-{rng.randrange(40)}"
        amount: Value = rng.choice([None, rng.random() * 100, rng.randrange(9)])
        label: Value = rng.choice([None, 0, 1])
        if "text" in kinds and rng.random() < 0.2:
            label = "x"
        events.append(
            Event(rng.randrange(20), ident, (amount, label), isinstance(ident, str))
        )
    return events


@pytest.mark.parametrize("kinds", ["numbers", "text values", "text-ids", "appends"])
def test_the_columnar_edit_equals_the_event_path(kinds: str) -> None:
    """`add_events` (the write path) holds what decoding, adding, pruning and
    encoding held, over random histories with ties, retries, NULLs and labels.
    (Equal values: an int kept in a float column after its floats were pruned
    reads back as 2.0, which equals 2 for every aggregation and filter.)"""
    rng = random.Random(7)
    unchanged = appended = 0
    for _ in range(300):
        state = EntityState()
        state.add(_random_events(rng, rng.randrange(0, 12), kinds=kinds))
        for e in state.events[: rng.randrange(3)]:
            state.label(e.id, e.ts_us, float(rng.randrange(2)))
        blob = encode(state) if state.events or state.labels else None
        new = _random_events(rng, rng.randrange(0, 6), kinds=kinds)
        if kinds == "appends":  # the common write: newer events, fresh ids
            new = sorted(
                (e._replace(ts_us=e.ts_us + 20, id=e.id + 100) for e in new),
                key=lambda e: (e.ts_us, e.id),
            )
            appended += (
                blob is not None
                and _appended(blob, frame(blob, where="t"), new, None) is not None
            )
        cutoff = rng.choice([None, rng.randrange(25)])
        expected = decode(blob, where="t") if blob is not None else EntityState()
        expected.add(new)
        if cutoff is not None:
            expected.prune(cutoff)
        got = add_events(blob, new, cutoff, where="t")
        if not expected.events and not expected.labels:
            assert got is None
        else:
            assert got is not None
            assert decode(got, where="t") == expected
            unchanged += got is blob
    assert unchanged > 0  # a retry or an empty write rewrites nothing
    assert kinds != "appends" or appended > 100  # the shortcut was exercised


@pytest.mark.parametrize("kinds", ["numbers", "text values", "text-ids", "appends"])
def test_the_batch_edit_writes_the_bytes_of_one_edit_per_entity(kinds: str) -> None:
    """`add_events_many` (a batch's write, checked and packed for all its
    entities at once) gives each entity the very blob `add_events` gives it,
    over batches mixing appends, retries, late events, prunes, NULLs, labels,
    entities without state and, per `kinds`, text ids or values."""
    rng = random.Random(11)
    fast = 0
    for _ in range(60):
        blobs: list[bytes | None] = []
        added: list[list[Event]] = []
        for _ in range(rng.randrange(1, 20)):  # from 6 on: packed at once
            state = EntityState()
            state.add(_random_events(rng, rng.randrange(0, 12), kinds=kinds))
            for e in state.events[: rng.randrange(3)]:
                state.label(e.id, e.ts_us, float(rng.randrange(2)))
            blobs.append(encode(state) if state.events or state.labels else None)
            new = _random_events(rng, rng.randrange(0, 5), kinds=kinds)
            if kinds == "appends" or rng.random() < 0.5:  # newer, fresh ids
                new = sorted(
                    (
                        e._replace(ts_us=e.ts_us + 20, id=e.id + 100)
                        for e in new
                        if not isinstance(e.id, str)
                    ),
                    key=lambda e: (e.ts_us, e.id),
                )
                new = list({e.id: e for e in new}.values())
            added.append(new)
        cutoffs = [rng.choice([None, rng.randrange(25)]) for _ in blobs]
        wheres = [f"t{k}" for k in range(len(blobs))]
        parsed = {b: frame(b, where="t") for b in blobs if b is not None}
        expected = [
            add_events(b, new, cut, where="t")
            for b, new, cut in zip(blobs, added, cutoffs, strict=True)
        ]
        got = add_events_many(blobs, added, cutoffs, wheres=wheres, parsed=parsed)
        assert got == expected
        # an unchanged state is the same object (no write)
        assert [g is b for g, b in zip(got, blobs, strict=True)] == [
            e is b for e, b in zip(expected, blobs, strict=True)
        ]
        fast += sum(
            b is not None and _appended(b, parsed[b], new, cut) is not None
            for b, new, cut in zip(blobs, added, cutoffs, strict=True)
        )
    assert kinds != "appends" or fast > 100  # the batch's shortcut was exercised


def test_a_write_reuses_the_frames_its_reader_parsed_and_keeps_none(
    state_url, tmp_path, monkeypatch
) -> None:
    state = open_event_state(state_url, tmp_path, "uc")
    state.write("v", [("1", Event(10, 1, (1.0,))), ("2", Event(11, 2, (2.0,)))], {})
    blobs = [blob for _, blob in state.read_blobs("v", ["1", "2"])]
    assert all(blob is not None for blob in blobs)
    frames = {blob: frame(blob, where="test") for blob in blobs if blob is not None}
    kept = [weakref.ref(f) for f in frames.values()]

    def no_parse(blob: bytes) -> object:
        raise AssertionError("a state the reader parsed was parsed again")

    with monkeypatch.context() as m:
        m.setattr(blob_module, "_parse", no_parse)
        state.write_views(
            [
                StateWrite(
                    "v",
                    [("1", Event(20, 3, (3.0,))), ("2", Event(21, 4, (4.0,)))],
                    {},
                    frames=frames,
                )
            ]
        )
    assert [e.id for e in state.read("v", ["1"], label_index=None)[0]] == [1, 3]
    assert [e.id for e in state.read("v", ["2"], label_index=None)[0]] == [2, 4]
    # nothing outlives the request that parsed it: a process-wide cache of
    # frames made the collector's full passes stall serving for ~100 ms
    del frames
    gc.collect()
    assert [ref() for ref in kept] == [None, None]
