"""Synthetic credit-card transactions with labelled fraud, after Le Borgne et al.

Vectorised port of the transaction data simulator from the "Reproducible Machine
Learning for Credit Card Fraud Detection - Practical Handbook": customer and
terminal profiles on a 100x100 grid, Poisson daily transaction counts, normal
amounts and times of day, and the handbook's three fraud scenarios. One
``numpy.random.Generator`` drives every draw, so a seed fixes the whole output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from scipy.spatial import cKDTree

__all__ = [
    "ALL_BAD_ROW_KINDS",
    "CUSTOMER_SCHEMA",
    "TERMINAL_SCHEMA",
    "TRANSACTION_SCHEMA",
    "BadRowKind",
    "Simulation",
    "inject_bad_rows",
    "simulate",
    "simulate_rowwise_pandas",
    "split_by_day",
    "transactions_as_strings",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SECONDS_PER_DAY = 86_400
TIME_OF_DAY_MEAN_S = SECONDS_PER_DAY / 2
TIME_OF_DAY_STD_S = 20_000.0
GRID_SIZE = 100.0
SCENARIO1_AMOUNT_THRESHOLD = 220.0
SCENARIO2_TERMINALS_PER_DAY = 2
SCENARIO2_WINDOW_DAYS = 28
SCENARIO3_CUSTOMERS_PER_DAY = 3
SCENARIO3_WINDOW_DAYS = 14
SCENARIO3_AMOUNT_FACTOR = 5.0
UNKNOWN_ID_BASE = 10_000_000
DATE_CHARS = 10

CUSTOMER_SCHEMA = pa.schema(
    [
        ("CUSTOMER_ID", pa.int64()),
        ("x_customer_id", pa.float64()),
        ("y_customer_id", pa.float64()),
        ("mean_amount", pa.float64()),
        ("std_amount", pa.float64()),
        ("mean_nb_tx_per_day", pa.float64()),
    ]
)
TERMINAL_SCHEMA = pa.schema(
    [
        ("TERMINAL_ID", pa.int64()),
        ("x_terminal_id", pa.float64()),
        ("y_terminal_id", pa.float64()),
    ]
)
TRANSACTION_SCHEMA = pa.schema(
    [
        ("TRANSACTION_ID", pa.int64()),
        ("TX_DATETIME", pa.timestamp("us")),
        ("CUSTOMER_ID", pa.int64()),
        ("TERMINAL_ID", pa.int64()),
        ("TX_AMOUNT", pa.float64()),
        ("TX_TIME_SECONDS", pa.int64()),
        ("TX_TIME_DAYS", pa.int64()),
        ("TX_FRAUD", pa.int64()),
        ("TX_FRAUD_SCENARIO", pa.int64()),
    ]
)

BadRowKind = Literal[
    "null",
    "negative_amount",
    "unknown_customer",
    "unknown_terminal",
    "duplicate_id",
    "wrong_type",
]
ALL_BAD_ROW_KINDS: tuple[BadRowKind, ...] = (
    "null",
    "negative_amount",
    "unknown_customer",
    "unknown_terminal",
    "duplicate_id",
    "wrong_type",
)


@dataclass(frozen=True)
class Simulation:
    """Customer profiles, terminal profiles and labelled transactions of one run.

    Tables follow CUSTOMER_SCHEMA, TERMINAL_SCHEMA and TRANSACTION_SCHEMA.
    """

    customers: pa.Table
    terminals: pa.Table
    transactions: pa.Table


# --------------------------------------------------------------------------- #
# Vectorised simulator
# --------------------------------------------------------------------------- #


def _check_sizes(
    n_customers: int, n_terminals: int, n_days: int, radius: float
) -> None:
    """Reject negative sizes or radius.

    Why: a clear error beats an obscure numpy failure deep inside the generator.
    """
    for name, value in (
        ("n_customers", n_customers),
        ("n_terminals", n_terminals),
        ("n_days", n_days),
        ("radius", radius),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _available_terminals(
    customer_xy: FloatArray, terminal_xy: FloatArray, radius: float
) -> tuple[IntArray, IntArray]:
    """Terminals strictly within ``radius`` of each customer, in CSR form.

    Why: returns (offsets, terminal ids) so customer c owns
    ``ids[offsets[c]:offsets[c + 1]]`` (sorted ids); distances in grid units.
    """
    n_customers = len(customer_xy)
    if n_customers == 0 or len(terminal_xy) == 0:
        return np.zeros(n_customers + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = cKDTree(customer_xy).sparse_distance_matrix(
        cKDTree(terminal_xy), radius, output_type="ndarray"
    )
    pairs = pairs[pairs["v"] < radius]  # handbook uses a strict inequality
    cust = pairs["i"].astype(np.int64)
    term = pairs["j"].astype(np.int64)
    order = np.lexsort((term, cust))
    counts = np.bincount(cust, minlength=n_customers)
    offsets = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, term[order]


def _scenario2_mask(
    rng: np.random.Generator,
    *,
    terminal: IntArray,
    day: IntArray,
    n_terminals: int,
    n_days: int,
) -> npt.NDArray[np.bool_]:
    """Flag transactions on terminals compromised in the last 28 days.

    Why: each day d, 2 random terminals are compromised for days d..d+27.
    """
    compromised = np.zeros((n_terminals, n_days), dtype=np.bool_)
    k = min(SCENARIO2_TERMINALS_PER_DAY, n_terminals)
    for d in range(n_days):
        drawn = rng.choice(n_terminals, size=k, replace=False)
        compromised[drawn, d : d + SCENARIO2_WINDOW_DAYS] = True
    mask: npt.NDArray[np.bool_] = compromised[terminal, day]
    return mask


def _scenario3_apply(
    rng: np.random.Generator,
    *,
    customer: IntArray,
    day: IntArray,
    amount: FloatArray,
    fraud: IntArray,
    scenario: IntArray,
    n_customers: int,
    n_days: int,
) -> None:
    """Mark a third of compromised customers' transactions as fraud, amount x5.

    Why: each day d, 3 random customers are compromised for days d..d+13; in place.
    """
    order = np.argsort(customer, kind="stable")  # per customer, in time order
    day_by_customer = day[order]
    offsets = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(np.bincount(customer, minlength=n_customers), out=offsets[1:])
    k = min(SCENARIO3_CUSTOMERS_PER_DAY, n_customers)
    for d in range(n_days):
        drawn = rng.choice(n_customers, size=k, replace=False)
        parts = []
        for c in drawn:
            lo, hi = offsets[c], offsets[c + 1]
            window = day_by_customer[lo:hi]
            start = lo + np.searchsorted(window, d, side="left")
            stop = lo + np.searchsorted(window, d + SCENARIO3_WINDOW_DAYS, side="left")
            parts.append(order[start:stop])
        candidates = np.sort(np.concatenate(parts)) if parts else order[:0]
        chosen = rng.choice(candidates, size=len(candidates) // 3, replace=False)
        amount[chosen] = np.round(amount[chosen] * SCENARIO3_AMOUNT_FACTOR, 2)
        fraud[chosen] = 1
        scenario[chosen] = 3


def simulate(
    *,
    n_customers: int = 5000,
    n_terminals: int = 10000,
    n_days: int = 183,
    start_date: str = "2018-04-01",
    radius: float = 5.0,
    seed: int = 0,
) -> Simulation:
    """Generate the handbook's customers, terminals and fraud-labelled transactions.

    Why: vectorised with numpy (~1.75 M rows at defaults in well under a second);
    one seeded Generator makes it reproducible. Amounts in currency units.
    """
    _check_sizes(n_customers, n_terminals, n_days, radius)
    rng = np.random.default_rng(seed)

    # Customer profiles.
    cx = rng.uniform(0.0, GRID_SIZE, n_customers)
    cy = rng.uniform(0.0, GRID_SIZE, n_customers)
    mean_amount = rng.uniform(5.0, 100.0, n_customers)
    std_amount = mean_amount / 2.0
    mean_nb_tx = rng.uniform(0.0, 4.0, n_customers)
    customers = pa.Table.from_arrays(
        [
            pa.array(np.arange(n_customers, dtype=np.int64)),
            pa.array(cx),
            pa.array(cy),
            pa.array(mean_amount),
            pa.array(std_amount),
            pa.array(mean_nb_tx),
        ],
        schema=CUSTOMER_SCHEMA,
    )

    # Terminal profiles and each customer's reachable terminals.
    tx_ = rng.uniform(0.0, GRID_SIZE, n_terminals)
    ty_ = rng.uniform(0.0, GRID_SIZE, n_terminals)
    terminals = pa.Table.from_arrays(
        [
            pa.array(np.arange(n_terminals, dtype=np.int64)),
            pa.array(tx_),
            pa.array(ty_),
        ],
        schema=TERMINAL_SCHEMA,
    )
    offsets, avail = _available_terminals(
        np.column_stack([cx, cy]), np.column_stack([tx_, ty_]), radius
    )
    n_avail = np.diff(offsets)

    # Daily counts, customer-major so that ties in time later sort by customer.
    counts = rng.poisson(np.broadcast_to(mean_nb_tx[:, None], (n_customers, n_days)))
    flat_counts = counts.ravel()
    customer = np.repeat(
        np.repeat(np.arange(n_customers, dtype=np.int64), n_days), flat_counts
    )
    day = np.repeat(
        np.tile(np.arange(n_days, dtype=np.int64), n_customers), flat_counts
    )
    time_of_day = rng.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, len(customer))
    time_of_day_s = time_of_day.astype(np.int64)  # int() truncation, as handbook
    keep = (time_of_day_s > 0) & (time_of_day_s < SECONDS_PER_DAY)
    keep &= n_avail[customer] > 0
    customer, day, time_of_day_s = customer[keep], day[keep], time_of_day_s[keep]

    amount = rng.normal(mean_amount[customer], std_amount[customer])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0.0, 2.0 * mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    pick = rng.integers(0, n_avail[customer]) if len(customer) else customer
    terminal = avail[offsets[customer] + pick]

    # Sort by time (stable: ties stay in customer order).
    seconds = day * SECONDS_PER_DAY + time_of_day_s
    order = np.argsort(seconds, kind="stable")
    customer, day, seconds = customer[order], day[order], seconds[order]
    terminal, amount = terminal[order], amount[order]

    # Fraud scenarios, in the handbook's order.
    fraud = (amount > SCENARIO1_AMOUNT_THRESHOLD).astype(np.int64)
    scenario = fraud.copy()
    s2 = _scenario2_mask(
        rng, terminal=terminal, day=day, n_terminals=n_terminals, n_days=n_days
    )
    fraud[s2] = 1
    scenario[s2] = 2
    _scenario3_apply(
        rng,
        customer=customer,
        day=day,
        amount=amount,
        fraud=fraud,
        scenario=scenario,
        n_customers=n_customers,
        n_days=n_days,
    )

    start = np.datetime64(start_date, "us")
    datetimes = start + seconds.astype("timedelta64[s]")
    transactions = pa.Table.from_arrays(
        [
            pa.array(np.arange(len(seconds), dtype=np.int64)),
            pa.array(datetimes, type=pa.timestamp("us")),
            pa.array(customer),
            pa.array(terminal),
            pa.array(amount),
            pa.array(seconds),
            pa.array(day),
            pa.array(fraud),
            pa.array(scenario),
        ],
        schema=TRANSACTION_SCHEMA,
    )
    return Simulation(
        customers=customers, terminals=terminals, transactions=transactions
    )


# --------------------------------------------------------------------------- #
# Raw (all-string) form, bad rows, daily batches
# --------------------------------------------------------------------------- #


def transactions_as_strings(transactions: pa.Table) -> pa.Table:
    """Convert every column to pa.string(), as a raw CSV-like landing file would be.

    Why: timestamps as "YYYY-MM-DD HH:MM:SS", ints as digits, floats shortest text.
    """
    columns: list[pa.ChunkedArray] = []
    for field in transactions.schema:
        col = transactions.column(field.name)
        if pa.types.is_string(field.type):
            columns.append(col)
        elif pa.types.is_timestamp(field.type):
            seconds = pc.cast(col, pa.timestamp("s", tz=field.type.tz), safe=False)
            if field.type.tz is None:  # plain cast prints "YYYY-MM-DD HH:MM:SS", fast
                columns.append(pc.cast(seconds, pa.string()))
            else:
                columns.append(pc.strftime(seconds, format="%Y-%m-%d %H:%M:%S"))
        else:
            columns.append(pc.cast(col, pa.string()))
    names = transactions.schema.names
    return pa.Table.from_arrays(
        columns, schema=pa.schema([(n, pa.string()) for n in names])
    )


def _is_all_strings(table: pa.Table) -> bool:
    """Whether every column of ``table`` is pa.string().

    Why: lets the helpers accept both typed and raw (all-string) tables.
    """
    return all(pa.types.is_string(t) for t in table.schema.types)


def _max_int(column: pa.ChunkedArray) -> int:
    """Largest value of an int or digit-string column, -1 when empty.

    Why: fresh ids and unknown foreign keys must lie above every existing id.
    """
    value = pc.max(pc.cast(column, pa.int64())).as_py()
    return -1 if value is None else int(value)


def _nudged_amount(text: str | None) -> str:
    """An amount one cent above ``text`` (or "0.01" if it is not a number).

    Why: a duplicate id must carry conflicting content, not be an exact copy.
    """
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        value = 0.0
    return repr(round(value + 0.01, 2))


def inject_bad_rows(
    transactions: pa.Table,
    *,
    n_per_kind: int = 5,
    kinds: Sequence[BadRowKind] = ALL_BAD_ROW_KINDS,
    seed: int = 0,
) -> pa.Table:
    """Return the transactions as all-string columns with defective rows appended.

    Why: exercises ingestion validation; each bad row copies a random row (same
    day) and breaks one thing. Adds ``n_per_kind * len(kinds)`` rows.
    """
    unknown = [k for k in kinds if k not in ALL_BAD_ROW_KINDS]
    if unknown:
        raise ValueError(f"unknown bad row kinds: {unknown}")
    if n_per_kind < 0:
        raise ValueError(f"n_per_kind must be >= 0, got {n_per_kind}")
    strings = (
        transactions
        if _is_all_strings(transactions)
        else transactions_as_strings(transactions)
    )
    total_bad = n_per_kind * len(kinds)
    if total_bad == 0:
        return strings
    if strings.num_rows == 0:
        raise ValueError("cannot inject bad rows into an empty table")

    rng = np.random.default_rng(seed)
    next_id = _max_int(transactions.column("TRANSACTION_ID")) + 1
    unknown_customer = max(
        UNKNOWN_ID_BASE, _max_int(transactions.column("CUSTOMER_ID")) + 1
    )
    unknown_terminal = max(
        UNKNOWN_ID_BASE, _max_int(transactions.column("TERMINAL_ID")) + 1
    )

    # Distinct source rows when possible, so duplicate ids come in exact pairs.
    sources = rng.choice(
        strings.num_rows, size=total_bad, replace=total_bad > strings.num_rows
    )
    rows: list[dict[str, Any]] = strings.take(pa.array(sources)).to_pylist()
    for i, row in enumerate(rows):
        kind = kinds[i // n_per_kind]
        j = i % n_per_kind
        if kind != "duplicate_id":
            row["TRANSACTION_ID"] = str(next_id)
            next_id += 1
        if kind == "null":
            row["TX_AMOUNT"] = None
        elif kind == "negative_amount":
            row["TX_AMOUNT"] = repr(-round(float(rng.uniform(0.01, 500.0)), 2))
        elif kind == "unknown_customer":
            row["CUSTOMER_ID"] = str(unknown_customer + j)
        elif kind == "unknown_terminal":
            row["TERMINAL_ID"] = str(unknown_terminal + j)
        elif kind == "duplicate_id":
            row["TX_AMOUNT"] = _nudged_amount(row["TX_AMOUNT"])
        else:  # wrong_type
            text = f"{float(rng.uniform(1.0, 500.0)):.2f}".replace(".", ",")
            row["TX_AMOUNT"] = text if j % 2 == 0 else "abc"
    bad = pa.Table.from_pylist(rows, schema=strings.schema)
    return pa.concat_tables([strings, bad])


def split_by_day(transactions: pa.Table) -> list[tuple[str, pa.Table]]:
    """Partition rows by calendar date of TX_DATETIME, in date order.

    Why: turns one simulation into daily batches; rows keep their relative order.
    """
    if transactions.num_rows == 0:
        return []
    column = transactions.column("TX_DATETIME")
    if pa.types.is_string(column.type):
        text = pc.utf8_slice_codeunits(column, 0, DATE_CHARS)
        dates = pc.cast(pc.strptime(text, format="%Y-%m-%d", unit="s"), pa.date32())
    else:
        dates = pc.cast(column, pa.date32())
    if dates.null_count:
        raise ValueError("TX_DATETIME has null or unparseable values")
    days = dates.cast(pa.int32()).to_numpy().astype(np.int64)
    if bool(np.all(days[1:] >= days[:-1])):  # already in date order: no copy
        ordered, sorted_days = transactions, days
    else:
        order = np.argsort(days, kind="stable")
        ordered, sorted_days = transactions.take(pa.array(order)), days[order]
    unique_days, starts = np.unique(sorted_days, return_index=True)
    stops = [*starts[1:].tolist(), len(sorted_days)]
    return [
        (str(np.datetime64(int(d), "D")), ordered.slice(int(lo), int(hi - lo)))
        for d, lo, hi in zip(unique_days, starts.tolist(), stops, strict=True)
    ]


# --------------------------------------------------------------------------- #
# Handbook-style reference (row by row, for speed comparison only)
# --------------------------------------------------------------------------- #


def _rowwise_transactions(
    profile: pd.Series[Any],
    rng: np.random.Generator,
    *,
    start_date: str,
    n_days: int,
) -> pd.DataFrame:
    """One customer's transactions, drawn tx by tx as the handbook does.

    Why: mirrors ``generate_transactions_table``; times in seconds since start.
    """
    rows = []
    customer_id = int(profile["CUSTOMER_ID"])
    terminals: list[int] = profile["available_terminals"]
    for d in range(n_days):
        nb_tx = rng.poisson(profile["mean_nb_tx_per_day"])
        for _ in range(nb_tx):
            time_tx = int(rng.normal(SECONDS_PER_DAY / 2, TIME_OF_DAY_STD_S))
            if 0 < time_tx < SECONDS_PER_DAY:
                amount = rng.normal(profile["mean_amount"], profile["std_amount"])
                if amount < 0:
                    amount = rng.uniform(0, profile["mean_amount"] * 2)
                amount = np.round(amount, decimals=2)
                if len(terminals) > 0:
                    terminal_id = terminals[int(rng.integers(len(terminals)))]
                    rows.append(
                        [
                            time_tx + d * SECONDS_PER_DAY,
                            d,
                            customer_id,
                            terminal_id,
                            amount,
                        ]
                    )
    frame = pd.DataFrame(
        rows,
        columns=[
            "TX_TIME_SECONDS",
            "TX_TIME_DAYS",
            "CUSTOMER_ID",
            "TERMINAL_ID",
            "TX_AMOUNT",
        ],
    )
    frame["TX_DATETIME"] = pd.to_datetime(
        frame["TX_TIME_SECONDS"].astype(np.int64), unit="s", origin=start_date
    )
    return frame


def simulate_rowwise_pandas(
    *,
    n_customers: int = 5000,
    n_terminals: int = 10000,
    n_days: int = 183,
    start_date: str = "2018-04-01",
    radius: float = 5.0,
    seed: int = 0,
) -> Simulation:
    """The handbook's own pandas generator: per-customer apply, Python loops per tx.

    Why: a faithful slow baseline to benchmark ``simulate`` against; same law.
    """
    _check_sizes(n_customers, n_terminals, n_days, radius)
    rng = np.random.default_rng(seed)
    profiles = []
    for customer_id in range(n_customers):
        x, y = rng.uniform(0, 100), rng.uniform(0, 100)
        mean_amount = rng.uniform(5, 100)
        profiles.append(
            [customer_id, x, y, mean_amount, mean_amount / 2, rng.uniform(0, 4)]
        )
    customers = pd.DataFrame(profiles, columns=CUSTOMER_SCHEMA.names)
    terminal_rows = [
        [t, rng.uniform(0, 100), rng.uniform(0, 100)] for t in range(n_terminals)
    ]
    terminals = pd.DataFrame(terminal_rows, columns=TERMINAL_SCHEMA.names)
    x_y_terminals = terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(dtype=float)

    def within_radius(profile: pd.Series[Any]) -> list[int]:
        x_y = profile[["x_customer_id", "y_customer_id"]].to_numpy(dtype=float)
        dist = np.sqrt(np.sum(np.square(x_y - x_y_terminals), axis=1))
        return [int(t) for t in np.where(dist < radius)[0]]

    work = customers.copy()
    work["available_terminals"] = work.apply(within_radius, axis=1)

    def per_customer(group: pd.DataFrame) -> pd.DataFrame:
        return _rowwise_transactions(
            group.iloc[0], rng, start_date=start_date, n_days=n_days
        )

    by_customer = work.set_index("CUSTOMER_ID", drop=False).groupby(level=0)
    tx = by_customer.apply(per_customer).reset_index(drop=True)
    tx = tx.sort_values(["TX_DATETIME", "CUSTOMER_ID"], kind="stable").reset_index(
        drop=True
    )
    tx["TRANSACTION_ID"] = np.arange(len(tx), dtype=np.int64)
    tx["TX_FRAUD"] = 0
    tx["TX_FRAUD_SCENARIO"] = 0

    big = tx["TX_AMOUNT"] > SCENARIO1_AMOUNT_THRESHOLD
    tx.loc[big, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = 1
    for d in range(n_days):
        k = min(SCENARIO2_TERMINALS_PER_DAY, n_terminals)
        compromised = terminals["TERMINAL_ID"].sample(n=k, random_state=rng)
        hit = (
            (tx["TX_TIME_DAYS"] >= d)
            & (tx["TX_TIME_DAYS"] < d + SCENARIO2_WINDOW_DAYS)
            & tx["TERMINAL_ID"].isin(compromised)
        )
        tx.loc[hit, "TX_FRAUD"] = 1
        tx.loc[hit, "TX_FRAUD_SCENARIO"] = 2
    for d in range(n_days):
        k = min(SCENARIO3_CUSTOMERS_PER_DAY, n_customers)
        compromised = customers["CUSTOMER_ID"].sample(n=k, random_state=rng)
        compromised_tx = tx[
            (tx["TX_TIME_DAYS"] >= d)
            & (tx["TX_TIME_DAYS"] < d + SCENARIO3_WINDOW_DAYS)
            & tx["CUSTOMER_ID"].isin(compromised)
        ]
        index_frauds = random.Random(int(rng.integers(2**32))).sample(
            list(compromised_tx.index.values), k=len(compromised_tx) // 3
        )
        tx.loc[index_frauds, "TX_AMOUNT"] = (
            tx.loc[index_frauds, "TX_AMOUNT"] * SCENARIO3_AMOUNT_FACTOR
        ).round(2)
        tx.loc[index_frauds, "TX_FRAUD"] = 1
        tx.loc[index_frauds, "TX_FRAUD_SCENARIO"] = 3

    tx["TX_DATETIME"] = tx["TX_DATETIME"].astype("datetime64[us]")
    int_columns = [
        n for n in TRANSACTION_SCHEMA.names if n not in {"TX_DATETIME", "TX_AMOUNT"}
    ]
    tx[int_columns] = tx[int_columns].astype(np.int64)
    tx["TX_AMOUNT"] = tx["TX_AMOUNT"].astype(np.float64)

    def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
        table = pa.Table.from_pandas(
            frame[schema.names], schema=schema, preserve_index=False
        )
        return table.replace_schema_metadata(None)

    return Simulation(
        customers=to_arrow(customers, CUSTOMER_SCHEMA),
        terminals=to_arrow(terminals, TERMINAL_SCHEMA),
        transactions=to_arrow(tx, TRANSACTION_SCHEMA),
    )
