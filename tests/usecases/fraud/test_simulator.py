"""Tests for the vectorised fraud transaction simulator."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aistack.usecases.fraud.simulator import (
    ALL_BAD_ROW_KINDS,
    CUSTOMER_SCHEMA,
    TERMINAL_SCHEMA,
    TRANSACTION_SCHEMA,
    Simulation,
    inject_bad_rows,
    simulate,
    simulate_rowwise_pandas,
    split_by_day,
    transactions_as_strings,
)

SMALL = {"n_customers": 200, "n_terminals": 400, "n_days": 30}


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(**SMALL, seed=0)


@pytest.fixture(scope="module")
def default_size() -> Simulation:
    return simulate(seed=0)


def _to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.schema.names}


# --------------------------------------------------------------------------- #
# simulate
# --------------------------------------------------------------------------- #


def test_same_seed_is_identical_and_other_seed_differs():
    a = simulate(**SMALL, seed=7)
    b = simulate(**SMALL, seed=7)
    c = simulate(**SMALL, seed=8)
    assert a.customers.equals(b.customers)
    assert a.terminals.equals(b.terminals)
    assert a.transactions.equals(b.transactions)
    assert not a.customers.equals(c.customers)
    assert not a.transactions.equals(c.transactions)


def test_schemas(small: Simulation):
    assert small.customers.schema.equals(CUSTOMER_SCHEMA)
    assert small.terminals.schema.equals(TERMINAL_SCHEMA)
    assert small.transactions.schema.equals(TRANSACTION_SCHEMA)
    assert small.transactions.schema.field("TX_DATETIME").type == pa.timestamp("us")
    assert small.customers.num_rows == SMALL["n_customers"]
    assert small.terminals.num_rows == SMALL["n_terminals"]


def test_profiles_follow_handbook_distributions(small: Simulation):
    cust = _to_numpy(small.customers)
    term = _to_numpy(small.terminals)
    np.testing.assert_array_equal(cust["CUSTOMER_ID"], np.arange(200))
    np.testing.assert_array_equal(term["TERMINAL_ID"], np.arange(400))
    for xy in (cust["x_customer_id"], cust["y_customer_id"], term["x_terminal_id"]):
        assert xy.min() >= 0 and xy.max() < 100
    assert cust["mean_amount"].min() >= 5 and cust["mean_amount"].max() < 100
    np.testing.assert_allclose(cust["std_amount"], cust["mean_amount"] / 2)
    rate = cust["mean_nb_tx_per_day"]
    assert rate.min() >= 0 and rate.max() < 4


def test_transactions_are_consistent(small: Simulation):
    tx = _to_numpy(small.transactions)
    n = len(tx["TRANSACTION_ID"])
    assert n > 5000
    np.testing.assert_array_equal(tx["TRANSACTION_ID"], np.arange(n))
    seconds = tx["TX_TIME_SECONDS"]
    np.testing.assert_array_equal(tx["TX_TIME_DAYS"], seconds // 86400)
    time_of_day = seconds % 86400
    assert (time_of_day > 0).all() and (time_of_day < 86400).all()
    assert tx["TX_TIME_DAYS"].min() >= 0 and tx["TX_TIME_DAYS"].max() < 30
    expected = np.datetime64("2018-04-01", "us") + seconds.astype("timedelta64[s]")
    np.testing.assert_array_equal(tx["TX_DATETIME"], expected)
    # Sorted by time, ties by customer id.
    order = np.lexsort((tx["CUSTOMER_ID"], seconds))
    np.testing.assert_array_equal(order, np.arange(n))
    # Non-scenario-3 amounts are non-negative and rounded to cents.
    base = tx["TX_AMOUNT"][tx["TX_FRAUD_SCENARIO"] != 3]
    assert (base >= 0).all()
    np.testing.assert_allclose(base, np.round(base, 2), rtol=0, atol=1e-9)


def test_terminals_are_within_radius(small: Simulation):
    tx = _to_numpy(small.transactions)
    cust = _to_numpy(small.customers)
    term = _to_numpy(small.terminals)
    c, t = tx["CUSTOMER_ID"], tx["TERMINAL_ID"]
    dx = cust["x_customer_id"][c] - term["x_terminal_id"][t]
    dy = cust["y_customer_id"][c] - term["y_terminal_id"][t]
    assert (np.hypot(dx, dy) < 5.0).all()


def test_all_scenarios_present_and_scenario1_rule(small: Simulation):
    tx = _to_numpy(small.transactions)
    scenario, fraud, amount = (
        tx["TX_FRAUD_SCENARIO"],
        tx["TX_FRAUD"],
        tx["TX_AMOUNT"],
    )
    assert set(np.unique(scenario)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(fraud, (scenario > 0).astype(np.int64))
    assert (amount[scenario == 1] > 220).all()
    # Every amount above the threshold is fraud (scenario 1 or overridden by 2/3).
    assert (fraud[amount > 220] == 1).all()


def test_scenario2_rows_are_on_recently_compromised_terminals(small: Simulation):
    tx = _to_numpy(small.transactions)
    days_by_terminal: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for t, d, s in zip(
        tx["TERMINAL_ID"], tx["TX_TIME_DAYS"], tx["TX_FRAUD_SCENARIO"], strict=True
    ):
        days_by_terminal[int(t)].append((int(d), int(s) in (2, 3)))
    s2 = tx["TX_FRAUD_SCENARIO"] == 2
    compromised_terminals = set(tx["TERMINAL_ID"][s2].tolist())
    assert len(compromised_terminals) <= 2 * SMALL["n_days"]
    for t, x in zip(tx["TERMINAL_ID"][s2], tx["TX_TIME_DAYS"][s2], strict=True):
        rows = days_by_terminal[int(t)]
        # Some compromise day d in [x-27, x] must flag every tx on t in d..d+27.
        assert any(
            all(flag for day, flag in rows if d <= day < d + 28)
            for d in range(max(0, int(x) - 27), int(x) + 1)
        )


def test_scenario3_marks_a_third_of_few_customers(small: Simulation):
    tx = _to_numpy(small.transactions)
    s3 = tx["TX_FRAUD_SCENARIO"] == 3
    customers = set(tx["CUSTOMER_ID"][s3].tolist())
    assert 0 < len(customers) <= 3 * SMALL["n_days"]
    on_compromised = np.isin(tx["CUSTOMER_ID"], list(customers))
    share = s3.sum() / on_compromised.sum()
    assert 0.05 < share < 0.4  # a third of the rows inside 14-day windows only


def test_fraud_share_small(small: Simulation):
    share = float(np.mean(small.transactions.column("TX_FRAUD").to_numpy()))
    assert 0.03 < share < 0.3  # sparse terminals: each compromise hits many rows


def test_default_size_matches_handbook(default_size: Simulation):
    tx = default_size.transactions
    assert 1_650_000 < tx.num_rows < 1_900_000
    share = float(np.mean(tx.column("TX_FRAUD").to_numpy()))
    assert 0.005 < share < 0.012
    assert tx.column("TX_TIME_DAYS").to_numpy().max() == 182


def test_degenerate_sizes():
    for kwargs in ({"n_customers": 0}, {"n_days": 0}, {"n_terminals": 0}):
        sim = simulate(**{"n_customers": 20, "n_terminals": 40, "n_days": 3, **kwargs})
        assert sim.transactions.num_rows == 0
        assert sim.transactions.schema.equals(TRANSACTION_SCHEMA)
        assert split_by_day(sim.transactions) == []
    with pytest.raises(ValueError, match="n_days"):
        simulate(n_days=-1)


def test_rowwise_pandas_has_same_schema_and_law():
    kwargs = {"n_customers": 60, "n_terminals": 400, "n_days": 10, "seed": 3}
    slow = simulate_rowwise_pandas(**kwargs)
    assert slow.customers.schema.equals(CUSTOMER_SCHEMA)
    assert slow.terminals.schema.equals(TERMINAL_SCHEMA)
    assert slow.transactions.schema.equals(TRANSACTION_SCHEMA)
    tx = _to_numpy(slow.transactions)
    n = len(tx["TRANSACTION_ID"])
    assert n > 200
    np.testing.assert_array_equal(tx["TRANSACTION_ID"], np.arange(n))
    assert (np.diff(tx["TX_TIME_SECONDS"]) >= 0).all()
    np.testing.assert_array_equal(tx["TX_TIME_DAYS"], tx["TX_TIME_SECONDS"] // 86400)
    assert (tx["TX_AMOUNT"][tx["TX_FRAUD_SCENARIO"] == 1] > 220).all()


# --------------------------------------------------------------------------- #
# String form and bad rows
# --------------------------------------------------------------------------- #


def test_transactions_as_strings(small: Simulation):
    strings = transactions_as_strings(small.transactions)
    assert strings.schema.names == TRANSACTION_SCHEMA.names
    assert all(t == pa.string() for t in strings.schema.types)
    assert strings.num_rows == small.transactions.num_rows
    dt = strings.column("TX_DATETIME").to_pylist()
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", v) for v in dt[:500])
    amounts = np.array([float(v) for v in strings.column("TX_AMOUNT").to_pylist()])
    np.testing.assert_array_equal(amounts, small.transactions["TX_AMOUNT"].to_numpy())
    ids = strings.column("CUSTOMER_ID").to_pylist()
    assert all(v.isdigit() for v in ids)
    back = pc.cast(strings.column("TX_DATETIME"), pa.timestamp("us"))
    assert back.equals(small.transactions.column("TX_DATETIME"))


def _parse(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def test_inject_bad_rows_defects(small: Simulation):
    n = 4
    original = transactions_as_strings(small.transactions)
    dirty = inject_bad_rows(small.transactions, n_per_kind=n, seed=1)
    assert all(t == pa.string() for t in dirty.schema.types)
    assert dirty.schema.names == TRANSACTION_SCHEMA.names
    assert dirty.num_rows == original.num_rows + n * len(ALL_BAD_ROW_KINDS)
    assert dirty.slice(0, original.num_rows).equals(original)

    bad = dirty.slice(original.num_rows).to_pylist()
    old_ids = set(original.column("TRANSACTION_ID").to_pylist())
    known_customers = {str(i) for i in range(SMALL["n_customers"])}
    known_terminals = {str(i) for i in range(SMALL["n_terminals"])}
    amounts = [r["TX_AMOUNT"] for r in bad]
    assert sum(a is None for a in amounts) == n
    assert sum((v := _parse(a)) is not None and v < 0 for a in amounts) == n
    assert sum(a is not None and _parse(a) is None for a in amounts) == n
    assert sum(r["CUSTOMER_ID"] not in known_customers for r in bad) == n
    assert sum(r["TERMINAL_ID"] not in known_terminals for r in bad) == n

    reused = [r for r in bad if r["TRANSACTION_ID"] in old_ids]
    assert len(reused) == n
    by_id = {r["TRANSACTION_ID"]: r for r in original.to_pylist()}
    for row in reused:  # conflicting duplicates: same id, different amount
        first = by_id[row["TRANSACTION_ID"]]
        assert row["TX_AMOUNT"] != first["TX_AMOUNT"]
        assert {k: v for k, v in row.items() if k != "TX_AMOUNT"} == {
            k: v for k, v in first.items() if k != "TX_AMOUNT"
        }
    fresh = [r["TRANSACTION_ID"] for r in bad if r["TRANSACTION_ID"] not in old_ids]
    assert len(set(fresh)) == len(fresh) == n * (len(ALL_BAD_ROW_KINDS) - 1)

    # Each bad row keeps the datetime (hence the day) of an existing row.
    datetimes = set(original.column("TX_DATETIME").to_pylist())
    assert all(r["TX_DATETIME"] in datetimes for r in bad)


def test_inject_bad_rows_kinds_subset_and_determinism(small: Simulation):
    a = inject_bad_rows(small.transactions, n_per_kind=3, kinds=["null"], seed=5)
    b = inject_bad_rows(small.transactions, n_per_kind=3, kinds=["null"], seed=5)
    c = inject_bad_rows(small.transactions, n_per_kind=3, kinds=["null"], seed=6)
    assert a.num_rows == small.transactions.num_rows + 3
    assert a.column("TX_AMOUNT").null_count == 3
    assert a.equals(b)
    assert not a.equals(c)
    with pytest.raises(ValueError, match="unknown bad row kinds"):
        inject_bad_rows(small.transactions, kinds=["bogus"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- #
# split_by_day
# --------------------------------------------------------------------------- #


def _check_partition(table: pa.Table, batches: list[tuple[str, pa.Table]]) -> None:
    dates = [d for d, _ in batches]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    assert sum(b.num_rows for _, b in batches) == table.num_rows
    for date, batch in batches:
        values = pc.cast(batch.column("TX_DATETIME"), pa.string()).to_pylist()
        assert all(v[:10] == date for v in values)
    key = "TRANSACTION_ID"
    got = Counter(v for _, b in batches for v in b.column(key).to_pylist())
    assert got == Counter(table.column(key).to_pylist())


def test_split_by_day_typed(small: Simulation):
    batches = split_by_day(small.transactions)
    assert len(batches) == SMALL["n_days"]
    assert batches[0][0] == "2018-04-01" and batches[-1][0] == "2018-04-30"
    _check_partition(small.transactions, batches)
    assert pa.concat_tables([b for _, b in batches]).equals(small.transactions)


def test_split_by_day_strings_with_bad_rows_and_shuffled(small: Simulation):
    dirty = inject_bad_rows(small.transactions, n_per_kind=5, seed=2)
    batches = split_by_day(dirty)
    assert len(batches) == SMALL["n_days"]
    _check_partition(dirty, batches)
    shuffled = dirty.take(np.random.default_rng(0).permutation(dirty.num_rows))
    shuffled_batches = split_by_day(shuffled)
    _check_partition(shuffled, shuffled_batches)
    assert [d for d, _ in shuffled_batches] == [d for d, _ in batches]
