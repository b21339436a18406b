"""One declaration, two compilations: DuckDB SQL and the online evaluator agree."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from aistack.contract import (
    FUNCTIONS,
    Aggregation,
    AggregationView,
    Value,
    Where,
    specs,
    window_label,
)
from aistack.errors import DeclarationError
from aistack.features import realtime
from aistack.features.aggregations import (
    Event,
    Flat,
    _merged,
    evaluate,
    evaluate_many,
)
from aistack.features.offline import view_rows
from aistack.features.state import open_event_state

T0 = datetime(2024, 1, 1)
H = timedelta(hours=1)


def frame_sql(rows: list[tuple[int, str, datetime, float | None, int]], aggs) -> dict:
    """Per-event features by the offline path over a table of rows (small
    batches: several cuts between entities)."""
    con = duckdb.connect()
    con.register(
        "events",
        pa.table(
            {
                "id": [r[0] for r in rows],
                "entity": [r[1] for r in rows],
                "ts": pa.array([r[2] for r in rows], pa.timestamp("us")),
                "x": pa.array([r[3] for r in rows], pa.float64()),
                "kind": [r[4] for r in rows],
            }
        ),
    )
    out = view_rows(
        con,
        "events",
        entity="entity",
        event_id="id",
        timestamp="ts",
        aggregations=aggs,
        chunk_rows=100,
    )
    out = out.read_all().to_pylist()
    return {r["id"]: r for r in out}


def online(rows, aggs) -> dict:
    """Per-event features by the online evaluator, events fed in stream order."""
    compiled = specs(aggs)
    columns = {"x": 0, "kind": 1}
    by_entity: dict[str, list[Event]] = {}
    out = {}
    for r in sorted(rows, key=lambda r: (r[2], r[0])):
        e = Event(
            int((r[2] - datetime(1970, 1, 1)) / timedelta(microseconds=1)),
            r[0],
            (r[3], r[4]),
        )
        held = by_entity.setdefault(r[1], [])
        values = evaluate(compiled, columns, held, e)
        held.append(e)
        out[r[0]] = dict(zip([s.name for s in compiled], values, strict=True))
    return out


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


ALL = (
    *(Aggregation(f, (2 * H, 24 * H), column="x") for f in FUNCTIONS),
    Aggregation("count", (H, 6 * H)),
    Aggregation(
        "mean", (3 * H,), column="kind", shift=5 * H, fill=0.0, name="risk_{window}"
    ),
    Aggregation("count", (3 * H,), shift=5 * H, name="shifted_{window}"),
    Aggregation(
        "sum", (24 * H,), column="x", where=Where("kind", "==", 1), name="s1_{window}"
    ),
    Aggregation(
        "last",
        (24 * H,),
        column="x",
        where=Where("kind", "in", (0, 2)),
        name="l02_{window}",
    ),
)


def test_sql_and_online_agree_on_random_events_with_ties_and_gaps() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(1500):
        # whole minutes over 4 days: many ties and exact window-boundary hits
        ts = T0 + timedelta(minutes=int(rng.integers(0, 4 * 24 * 60)))
        if i % 10 == 0 and rows:
            ts = rows[-1][2]  # the same microsecond as another event
        x = None if i % 17 == 0 else float(rng.normal(50, 20))
        rows.append(
            (
                int(rng.permutation(10_000)[0]) * 1000 + i,
                f"e{rng.integers(0, 6)}",
                ts,
                x,
                int(rng.integers(0, 3)),
            )
        )
    offline = frame_sql(rows, ALL)
    served = online(rows, ALL)
    names = [s.name for s in specs(ALL)]
    assert len(offline) == len(rows)
    bad = [
        (i, n, offline[i][n], served[i][n])
        for i in served
        for n in names
        if not same(offline[i][n], served[i][n])
    ]
    assert bad == []
    # the data did exercise ties, empty shifted windows and boundary hits
    assert any(offline[i]["shifted_3h"] == 0 for i in offline)
    assert any(offline[i]["stddev_x_2h"] is None for i in offline)


def random_rows(
    rng: np.random.Generator,
    n: int,
    *,
    days: int,
    entities: int,
    tie: int,
    null: int,
    step: int,
) -> list[tuple[int, str, datetime, float | None, int]]:
    """(id, entity, time, x, kind): whole minutes, every `tie`-th event in the
    same microsecond as the one before, every `null`-th x NULL."""
    rows: list[tuple[int, str, datetime, float | None, int]] = []
    for i in range(n):
        ts = T0 + timedelta(minutes=int(rng.integers(0, days * 24 * 60)))
        if i % tie == 0 and rows:
            ts = rows[-1][2]
        x = None if i % null == 0 else float(rng.normal(50, 20))
        rows.append((i * step % n, f"e{rng.integers(0, entities)}", ts, x, i % 3))
    return rows


def test_one_vectorised_call_over_every_entity_equals_the_stream() -> None:
    """All events of all entities at once (as a batch sees them): each request
    sees only the events before it, whatever else its segment holds."""
    rng = np.random.default_rng(11)
    rows = random_rows(rng, 600, days=2, entities=5, tie=8, null=13, step=7)
    compiled = specs(ALL)
    us = timedelta(microseconds=1)
    by_entity: dict[str, list[Event]] = {}
    for r in rows:
        e = Event((r[2] - datetime(1970, 1, 1)) // us, r[0], (r[3], r[4]))
        by_entity.setdefault(r[1], []).append(e)
    segments = [sorted(v, key=lambda e: e.key) for v in by_entity.values()]
    requests = [(i, e) for i, seg in enumerate(segments) for e in seg]
    rng.shuffle(requests)
    got = evaluate_many(compiled, {"x": 0, "kind": 1}, segments, requests)
    served = online(rows, ALL)
    for (_, e), row in zip(requests, got, strict=True):
        want = [served[e.id][s.name] for s in compiled]
        assert all(
            same(None if math.isnan(v) else float(v), w)
            for v, w in zip(row, want, strict=True)
        ), e


def test_hand_computed_case() -> None:
    rows = [
        (1, "a", T0, 10.0, 0),
        (2, "a", T0, 20.0, 1),  # tie with 1: sees 1, 1 does not see 2
        (3, "a", T0 + 24 * H, 30.0, 0),  # exactly one day later: 1 and 2 are out
        (4, "a", T0 + 24 * H + timedelta(seconds=1), 40.0, 1),
    ]
    aggs = (
        Aggregation("count", (24 * H,), name="n_{window}"),
        Aggregation("mean", (24 * H,), column="x", name="m_{window}"),
        Aggregation("mean", (24 * H,), column="kind", shift=24 * H, name="r_{window}"),
    )
    got = frame_sql(rows, aggs)
    assert [got[i]["n_1d"] for i in (1, 2, 3, 4)] == [1, 2, 1, 2]
    assert [got[i]["m_1d"] for i in (1, 2, 3, 4)] == [10.0, 15.0, 30.0, 35.0]
    # shifted (t - 2d, t - 1d]: event 3 sees 1 and 2 (labels 0, 1), event 1 none
    assert [got[i]["r_1d"] for i in (1, 3, 4)] == [None, 0.5, 0.5]
    assert online(rows, aggs) == {
        i: {k: v for k, v in r.items() if k in ("n_1d", "m_1d", "r_1d")}
        for i, r in got.items()
    }


def test_a_retried_or_late_event_never_sees_its_future() -> None:
    compiled = specs((Aggregation("count", (24 * H,), name="n_{window}"),))
    held = [
        Event(t, i, ()) for i, t in ((1, 0), (2, 3_600_000_000), (3, 7_200_000_000))
    ]
    late = Event(3_600_000_000, 9, ())  # after 2 in id order, before 3 in time
    assert evaluate(compiled, {}, held, late) == [3.0]  # 1, 2 and itself
    retried = held[1]
    assert evaluate(compiled, {}, held, retried) == [2.0]  # counted once


def test_declarations_check_themselves() -> None:
    with pytest.raises(DeclarationError, match="needs a column"):
        Aggregation("mean", (H,))
    with pytest.raises(DeclarationError, match="windows"):
        Aggregation("count", ())
    with pytest.raises(DeclarationError, match="expected one of"):
        Aggregation("median", (H,), column="x")  # type: ignore[arg-type]
    with pytest.raises(DeclarationError, match="'in' takes a tuple"):
        Where("kind", "in", 1)
    assert window_label(timedelta(days=7)) == "7d"
    assert window_label(timedelta(minutes=90)) == "90m"
    assert Where("name", "==", "o'brien").sql() == "\"name\" = 'o''brien'"


def _batch_run(
    tmp_path, rows, batches, labels, *, columnar: bool, monkeypatch, path="_columnar"
):
    """Features of each batch of `rows` through a real SQLite state, each batch
    committed before the next; `labels` (event id -> label) arrive before the
    batch that follows their event's batch. `path`: the columnar function that
    `columnar` counts, or turns off."""
    view = AggregationView(
        "v",
        "silver.events",
        entity="entity",
        id="id",
        timestamp="ts",
        aggregations=ALL,
    )
    taken = []
    if columnar:  # count the batches the columnar path answered
        inner = getattr(realtime, path)
        monkeypatch.setattr(
            realtime,
            path,
            lambda *a, **k: taken.append(inner(*a, **k)) or taken[-1],
        )
    else:
        monkeypatch.setattr(realtime, path, lambda *a, **k: None)
    state = open_event_state(f"sqlite:///{tmp_path / 'online.db'}", tmp_path, "t")
    us = timedelta(microseconds=1)
    out = []
    for b, batch in enumerate(batches):
        picked = [rows[i] for i in batch]
        found = realtime.online_features(
            view,
            state,
            entities=[r[1] for r in picked],
            ts_us=[(r[2] - datetime(1970, 1, 1)) // us for r in picked],
            ids=[r[0] for r in picked],
            anonymous=[False] * len(picked),
            columns={"x": [r[3] for r in picked], "kind": [None] * len(picked)},
            label_at=1,
        )
        realtime.commit(state, [(view, found, True)])
        out.append((found.values, found.late, sorted(e.id for _, e in found.events)))
        known = [(i, v) for i, (when, v) in labels.items() if when == b]
        if known:
            where = state.locate("v", [i for i, _ in known])
            state.write_labels(
                "v",
                [(where[str(i)].entity, i, where[str(i)].ts_us, v) for i, v in known],
            )
    monkeypatch.undo()
    if path == "_columnar":
        assert all(t is not None for t in taken)
        assert len(taken) == len(batches) * columnar
    return out, taken


def test_the_single_row_columnar_path_equals_the_event_path(
    tmp_path, monkeypatch
) -> None:
    """One request at a time (the columnar single-row path, `_one`) over a real
    state gives the event path's features, late flags and state writes: ties,
    NULLs, labels arriving later, late events; a retried id is left to the
    event path."""
    rng = np.random.default_rng(8)
    rows = random_rows(rng, 500, days=3, entities=4, tie=7, null=11, step=17)
    rows = [(i + 1, e, ts, x, None) for i, e, ts, x, _ in rows]
    order = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][0]))
    singles, held_back = [], []
    for k, i in enumerate(order):
        if rng.random() < 0.1:  # held back: arrives late
            held_back.append(i)
            continue
        singles.append([i])
        if len(held_back) > 2:
            singles.append([held_back.pop(0)])
        if k % 37 == 0 and len(singles) > 1:  # a retry of an earlier request
            singles.append(list(singles[-2]))
    singles += [[i] for i in held_back]
    labels = {
        rows[b[0]][0]: (n, float(rng.integers(0, 2)))
        for n, b in enumerate(singles)
        if rng.random() < 0.6
    }
    fast, taken = _batch_run(
        tmp_path / "a",
        rows,
        singles,
        labels,
        columnar=True,
        monkeypatch=monkeypatch,
        path="_one",
    )
    slow, _ = _batch_run(
        tmp_path / "b",
        rows,
        singles,
        labels,
        columnar=False,
        monkeypatch=monkeypatch,
        path="_one",
    )
    for (fv, fl, fe), (sv, sl, se) in zip(fast, slow, strict=True):
        assert fe == se and fl == sl
        np.testing.assert_allclose(fv, sv, rtol=1e-12, atol=1e-12, equal_nan=True)
    answered = sum(t is not None for t in taken)
    assert answered > 0.9 * len(singles)  # the columnar path did answer
    assert answered < len(singles)  # and the retries went the event path
    assert any(late for _, late, _ in fast if late[0])  # late ones were exercised


def test_the_columnar_batch_path_equals_the_event_path(tmp_path, monkeypatch) -> None:
    """Batches of 9 to 40 requests (the columnar path) over a real state give the
    event path's features, late flags and state writes: ties, NULLs, labels
    arriving later, an id retried in a later batch or repeated in its own."""
    rng = np.random.default_rng(5)
    rows = random_rows(rng, 700, days=3, entities=7, tie=9, null=11, step=13)
    rows = [(i + 1, e, ts, x, None) for i, e, ts, x, _ in rows]  # ids > 0, no label
    order = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][0]))
    batches, at, held_back = [], 0, []
    while at < len(order):
        size = int(rng.integers(9, 41))
        batch = order[at : at + size]
        at += size
        if rng.random() < 0.3:  # an event held back: it arrives late
            held_back.append(batch.pop())
        if len(held_back) > 3:
            batch.append(held_back.pop(0))
        if batches and rng.random() < 0.5:  # a retry of an earlier batch's event
            batch.append(int(rng.choice(batches[-1])))
        if rng.random() < 0.3:  # the same event twice in one batch
            batch.append(batch[0])
        batches.append(batch)
    batches[-1].extend(held_back)  # the last ones arrive at the very end
    labels = {
        rows[i][0]: (b, float(rng.integers(0, 2)))
        for b, batch in enumerate(batches)
        for i in batch
        if rng.random() < 0.6
    }
    fast, _ = _batch_run(
        tmp_path / "a", rows, batches, labels, columnar=True, monkeypatch=monkeypatch
    )
    slow, _ = _batch_run(
        tmp_path / "b", rows, batches, labels, columnar=False, monkeypatch=monkeypatch
    )
    assert len(fast) == len(slow) == len(batches)
    for (fv, fl, fe), (sv, sl, se) in zip(fast, slow, strict=True):
        assert fe == se and fl == sl
        np.testing.assert_allclose(fv, sv, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert any(any(late) for _, late, _ in fast)  # late events were exercised


def test_merging_requests_into_the_sorted_state_orders_as_the_full_sort() -> None:
    """`evaluate_flat` merges a batch's requests into the stored events (sorted
    per entity already) instead of sorting everything: the same order as
    sorting by (entity, time, id, hidden twin first), over random batches with
    ties on time, retried ids (hidden twins), requests older than the state
    and events past every window."""
    rng = np.random.default_rng(5)
    merged = 0
    for _ in range(300):
        entities = int(rng.integers(1, 6))
        sizes = rng.integers(0, 8, entities)
        seg = np.repeat(np.arange(entities), sizes)
        ts = rng.integers(0, 30, len(seg)) * 10
        ids = rng.permutation(1000)[: len(seg)]
        first = np.lexsort((ids, ts, seg))  # each entity's state: sorted
        seg, ts, ids = seg[first], ts[first], ids[first]
        stored = Flat(seg, ts, ids, [], np.zeros(len(seg), dtype=bool))
        n = int(rng.integers(1, 10))
        r_seg = rng.integers(0, entities, n)
        r_ts = rng.integers(5, 35, n) * 10
        r_ids = rng.integers(1000, 1010, n)
        hidden = np.zeros(n, dtype=bool)
        for k in range(n):  # some are retries of a stored event: hidden twins
            mates = np.flatnonzero(seg == r_seg[k])
            if len(mates) and rng.random() < 0.4:
                j = int(rng.choice(mates))
                r_ts[k], r_ids[k] = ts[j], ids[j]
                hidden[k] = rng.random() < 0.75  # or an exact twin, not hidden
        requests = Flat(r_seg, r_ts, r_ids, [], hidden)
        base, span = int(r_ts.min()) - 101, int(r_ts.max()) - int(r_ts.min()) + 102
        order = _merged(stored, requests, base, span)
        full = np.lexsort(
            (
                ~np.concatenate([stored.hidden, hidden]),
                np.concatenate([ids, r_ids]),
                np.concatenate([ts, r_ts]),
                np.concatenate([seg, r_seg]),
            )
        )
        assert order is not None
        assert order.tolist() == full.tolist()
        merged += 1
    unsorted = Flat(
        np.array([0, 0]),
        np.array([20, 10]),
        np.array([1, 2]),
        [],
        np.zeros(2, dtype=bool),
    )
    assert _merged(unsorted, requests, 0, 1000) is None  # sorted by the caller
    assert merged == 300


@pytest.mark.parametrize("ids", ["small", "spread", "text labels"])
def test_labels_merged_for_a_whole_batch_equal_each_entitys(ids: str) -> None:
    """`_stored` puts every entity's arrived labels into the flat label column
    at once (one search of (entity, id) keys): the same column as merging each
    entity's labels on its own (`Frame.labelled`), labels arriving out of id
    order, ids spread past 2**40 and text label ids (both merged per entity)."""
    from aistack.features.blob import EntityState, encode  # noqa: PLC0415

    rng = np.random.default_rng(3)
    for _ in range(40):
        blobs = []
        for e in range(int(rng.integers(1, 8))):
            state = EntityState()
            start = 2**50 * e if ids == "spread" else 1000 * e
            events = [
                Event(int(t), start + k, (float(rng.random()), None))
                for k, t in enumerate(np.sort(rng.integers(0, 50, rng.integers(0, 9))))
            ]
            state.add(events)
            for ev in rng.permutation(len(events)).tolist():  # any arrival order
                if rng.random() < 0.6:
                    label: Value = events[ev].id
                    if ids == "text labels" and rng.random() < 0.5:
                        label = str(label)  # a label id given as text
                    state.label(label, events[ev].ts_us, float(rng.integers(0, 2)))
            blobs.append(("t", encode(state) if state.events else None))
        frames: dict = {}
        held = realtime._held(blobs, frames)
        assert held is not None
        flat = realtime._stored(held, 2, 1)
        expected = [frames[b].labelled(1)[1] for _, b in blobs if b is not None]
        if expected:
            np.testing.assert_array_equal(
                flat.values[1][1], np.concatenate([c.valid for c in expected])
            )
            data = np.concatenate([c.data.astype(np.float64) for c in expected])
            valid = flat.values[1][1]
            np.testing.assert_array_equal(flat.values[1][0][valid], data[valid])
