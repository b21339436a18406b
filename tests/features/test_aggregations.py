"""One declaration, two compilations: DuckDB SQL and the online evaluator agree."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from aistack.contract import FUNCTIONS, Aggregation, Where, specs, window_label
from aistack.errors import DeclarationError
from aistack.features.aggregations import Event, evaluate, evaluate_many, view_sql

T0 = datetime(2024, 1, 1)
H = timedelta(hours=1)


def frame_sql(rows: list[tuple[int, str, datetime, float | None, int]], aggs) -> dict:
    """Per-event features by the compiled SQL over a table of rows."""
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
    sql = view_sql(
        "events", entity="entity", event_id="id", timestamp="ts", aggregations=aggs
    )
    out = con.sql(sql).to_arrow_table().to_pylist()
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


def test_one_vectorised_call_over_every_entity_equals_the_stream() -> None:
    """All events of all entities at once (as a batch sees them): each request
    sees only the events before it, whatever else its segment holds."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(600):
        ts = T0 + timedelta(minutes=int(rng.integers(0, 2 * 24 * 60)))
        if i % 8 == 0 and rows:
            ts = rows[-1][2]
        x = None if i % 13 == 0 else float(rng.normal(50, 20))
        rows.append((i * 7 % 600, f"e{rng.integers(0, 5)}", ts, x, i % 3))
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
