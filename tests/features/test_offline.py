"""The offline per-event windows: equal to the online evaluator, whatever the
batch cut, the other entities read with an entity, or the time span."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from aistack.contract import FUNCTIONS, Aggregation, specs
from aistack.features.aggregations import Event, evaluate
from aistack.features.offline import view_rows

H = timedelta(hours=1)
AGGS = (
    *(Aggregation(f, (2 * H, 24 * H), column="x") for f in FUNCTIONS),
    Aggregation("count", (H,)),
    Aggregation("mean", (3 * H,), column="x", shift=5 * H, fill=0.0, name="r_{window}"),
)


def rows_of(con: duckdb.DuckDBPyConnection, source: str, **kw) -> dict:
    found = view_rows(
        con,
        source,
        entity="entity",
        event_id="id",
        timestamp="ts",
        aggregations=AGGS,
        **kw,
    )
    return {r["id"]: r for r in found.read_all().to_pylist()}


def events(rng: np.random.Generator, starts: list[datetime]) -> pa.Table:
    """Events of entities e0..e<k>, each around its own start: whole minutes
    over two days, every 7th in the same microsecond as the one before."""
    ids, entities, times, xs = [], [], [], []
    for i in range(40 * len(starts)):
        k = int(rng.integers(0, len(starts)))
        ts = starts[k] + timedelta(minutes=int(rng.integers(0, 2 * 24 * 60)))
        if i % 7 == 0 and times and entities[-1] == f"e{k}":
            ts = times[-1]
        ids.append(int(rng.permutation(10_000)[0]) * 1000 + i)
        entities.append(f"e{k}" if i % 50 else None)  # a few NULL entities
        times.append(ts)
        xs.append(None if i % 11 == 0 else float(rng.normal(50, 20)))
    return pa.table(
        {
            "id": ids,
            "entity": entities,
            "ts": pa.array(times, pa.timestamp("us")),
            "x": pa.array(xs, pa.float64()),
        }
    )


def online(table: pa.Table) -> dict:
    """Per-event features by the online evaluator, in stream order."""
    compiled = specs(AGGS)
    held: dict[str | None, list[Event]] = {}
    out = {}
    rows = sorted(table.to_pylist(), key=lambda r: (r["ts"], r["id"]))
    for r in rows:
        us = (r["ts"] - datetime(1, 1, 1)) // timedelta(microseconds=1)
        e = Event(us, r["id"], (r["x"],))
        before = held.setdefault(r["entity"], [])
        out[r["id"]] = dict(
            zip(
                [s.name for s in compiled],
                evaluate(compiled, {"x": 0}, before, e),
                strict=True,
            )
        )
        before.append(e)
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_an_entity_alone_and_any_batch_cut_give_the_same_values() -> None:
    con = duckdb.connect()
    con.register("events", events(np.random.default_rng(5), [datetime(2024, 1, 1)] * 6))
    whole = rows_of(con, "events")
    cut = rows_of(con, "events", chunk_rows=16)
    assert cut == whole  # exact: windows and sums never cross entities
    alone = rows_of(con, "(SELECT * FROM events WHERE entity = 'e2')")
    assert alone == {i: whole[i] for i in alone}
    nulls = rows_of(con, "(SELECT * FROM events WHERE entity IS NULL)")
    assert nulls and nulls == {i: whole[i] for i in nulls}


def test_times_ages_apart_give_the_online_values() -> None:
    """Entities times a span too wide for int64 keys: times are ranked instead."""
    starts = [datetime(1 + 499 * k, 1, 1) for k in range(20)]
    table = events(np.random.default_rng(9), starts)
    con = duckdb.connect()
    con.register("events", table)
    offline, served = rows_of(con, "events"), online(table)
    assert offline.keys() == served.keys()
    bad = [
        (i, name)
        for i, row in served.items()
        for name, value in row.items()
        if not close(offline[i][name], value)
    ]
    assert bad == []
