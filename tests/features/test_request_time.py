"""Request-time features: the compiled plan gives polars' values, or gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from aistack.contract import get_use_case
from aistack.features.request_time import RequestPlan, request_plan

EXTRA = {
    "scaled": (pl.col("tx_amount") * 2.5 + 1).cast(pl.Float64),
    "ratio": pl.col("tx_amount") / pl.col("terminal_id"),
    "late_month": (pl.col("tx_datetime").dt.month() > 6).cast(pl.Float64),
    "minute": pl.col("tx_datetime").dt.minute(),
    "weekday": pl.col("tx_datetime").dt.weekday().alias("ignored"),
    "small_id": (pl.col("customer_id") != 3).cast(pl.Float64),
}


def rows(n: int) -> list[dict]:
    rng = np.random.default_rng(5)
    t0 = datetime(2018, 1, 1)
    return [
        {
            "tx_datetime": t0 + timedelta(seconds=int(rng.integers(0, 400 * 86_400))),
            "customer_id": int(rng.integers(0, 6)),
            "terminal_id": int(rng.integers(1, 50)),
            "tx_amount": float(rng.gamma(2, 40)) if i % 7 else float(i % 90),
        }
        for i in range(n)
    ]


def by_polars(features, data) -> dict[str, np.ndarray]:
    columns = {c: [r[c] for r in data] for c in data[0]}
    frame = pl.DataFrame(columns).with_columns(
        e.alias(name) for name, e in features.items()
    )
    return {n: frame.get_column(n).to_numpy().astype(np.float64) for n in features}


def test_compiled_plan_equals_polars_on_the_use_case_and_more_expressions() -> None:
    features = {**get_use_case("fraud").request_features, **EXTRA}
    plan = RequestPlan.compile(features)
    assert plan.nodes is not None
    data = rows(500)
    got = plan.evaluate(data)
    assert got is not None
    want = by_polars(features, data)
    for name in features:
        assert np.array_equal(np.array(got[name]), want[name]), name
    for row in data[:50]:  # one row at a time, as a server sees them
        one = plan.evaluate([row])
        assert one is not None
        assert {k: v[0] for k, v in one.items()} == {
            k: float(v[0]) for k, v in by_polars(features, [row]).items()
        }


def test_plan_gives_up_where_polars_decides() -> None:
    fraud = get_use_case("fraud").request_features
    plan = request_plan(fraud)
    assert request_plan(fraud) is plan  # memoised per declaration mapping
    row = rows(1)[0]
    assert plan.evaluate([{**row, "tx_amount": None}]) is None  # NULL
    aware = row["tx_datetime"].replace(tzinfo=UTC)
    assert plan.evaluate([{**row, "tx_datetime": aware}]) is None
    assert plan.evaluate([{**row, "tx_amount": "12"}]) is None
    assert plan.evaluate([{**row, "tx_amount": 2**60}]) is None
    divide = RequestPlan.compile({"r": pl.col("a") / pl.col("b")})
    assert divide.evaluate([{"a": 1.0, "b": 0}]) is None
    odd = RequestPlan.compile({"s": pl.col("a").rolling_mean(3)})
    assert odd.nodes is None
    assert odd.evaluate([{"a": 1.0}]) is None
