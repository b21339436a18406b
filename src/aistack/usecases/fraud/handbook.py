"""The handbook's own pandas feature code (Le Borgne et al., chapter 3.4).

Kept as the reference our DuckDB feature views are tested against and
benchmarked against; the platform never calls it. Column names are the
handbook's (`CUSTOMER_ID_NB_TX_1DAY_WINDOW`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

WINDOWS = (1, 7, 30)


def customer_spending_features(
    customer_transactions: pd.DataFrame, windows: Sequence[int] = WINDOWS
) -> pd.DataFrame:
    """Rolling count and mean amount of one customer's transactions, per window."""
    frame = customer_transactions.sort_values("TX_DATETIME")
    frame.index = frame.TX_DATETIME
    for window in windows:
        total = frame["TX_AMOUNT"].rolling(f"{window}D").sum()
        count = frame["TX_AMOUNT"].rolling(f"{window}D").count()
        frame[f"CUSTOMER_ID_NB_TX_{window}DAY_WINDOW"] = list(count)
        frame[f"CUSTOMER_ID_AVG_AMOUNT_{window}DAY_WINDOW"] = list(total / count)
    frame.index = frame.TRANSACTION_ID
    return frame


def terminal_risk_features(
    terminal_transactions: pd.DataFrame,
    delay_days: int = 7,
    windows: Sequence[int] = WINDOWS,
) -> pd.DataFrame:
    """Rolling fraud share of one terminal, shifted back by the label delay."""
    frame = terminal_transactions.sort_values("TX_DATETIME")
    frame.index = frame.TX_DATETIME
    fraud_delay = frame["TX_FRAUD"].rolling(f"{delay_days}D").sum()
    count_delay = frame["TX_FRAUD"].rolling(f"{delay_days}D").count()
    for window in windows:
        fraud_all = frame["TX_FRAUD"].rolling(f"{delay_days + window}D").sum()
        count_all = frame["TX_FRAUD"].rolling(f"{delay_days + window}D").count()
        fraud = fraud_all - fraud_delay
        count = count_all - count_delay
        frame[f"TERMINAL_ID_NB_TX_{window}DAY_WINDOW"] = list(count)
        frame[f"TERMINAL_ID_RISK_{window}DAY_WINDOW"] = list(fraud / count)
    frame.index = frame.TRANSACTION_ID
    return frame.fillna(0)


def handbook_features(transactions: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """All customer and terminal features the handbook's way (groupby + rolling)."""
    # pandas 3 hides the grouping column from `apply`: group by a copy of it.
    by_customer = transactions.assign(_group=transactions["CUSTOMER_ID"])
    customers = by_customer.groupby("_group", group_keys=False).apply(
        customer_spending_features
    )
    customers = customers.sort_values("TX_DATETIME").reset_index(drop=True)
    by_terminal = customers.assign(_group=customers["TERMINAL_ID"])
    terminals = by_terminal.groupby("_group", group_keys=False).apply(
        lambda frame: terminal_risk_features(frame, delay_days)
    )
    return terminals.sort_values("TX_DATETIME").reset_index(drop=True)


# The handbook's evaluation protocol (its shared functions `get_train_test_set`
# and `card_precision_top_k`), restated with its loops, as the reference our
# `drop_known_positives` and `DailyEntityPrecision` are tested against.


def handbook_test_set(
    transactions: pd.DataFrame,
    train_start: pd.Timestamp,
    delta_train: int = 7,
    delta_delay: int = 7,
    delta_test: int = 7,
) -> pd.DataFrame:
    """Test days without cards known compromised: train frauds, then one more
    delay day per test day (`TX_TIME_DAYS` is the day index of a transaction)."""
    train = transactions[
        transactions.TX_DATETIME.ge(train_start)
        & transactions.TX_DATETIME.lt(train_start + pd.Timedelta(days=delta_train))
    ]
    known = set(train[train.TX_FRAUD == 1].CUSTOMER_ID)
    first_day = train.TX_TIME_DAYS.min()
    days = []
    for day in range(delta_test):
        test_day = transactions[
            transactions.TX_TIME_DAYS.eq(first_day + delta_train + delta_delay + day)
        ]
        delay_day = transactions[
            transactions.TX_TIME_DAYS.eq(first_day + delta_train + day - 1)
        ]
        known |= set(delay_day[delay_day.TX_FRAUD == 1].CUSTOMER_ID)
        days.append(test_day[~test_day.CUSTOMER_ID.isin(known)])
    return pd.concat(days).sort_values("TRANSACTION_ID")


def handbook_card_precision_top_k(predictions: pd.DataFrame, top_k: int) -> float:
    """Mean daily card precision@k, cards detected on earlier days removed."""
    detected: list[int] = []
    per_day = []
    for day in sorted(predictions.TX_TIME_DAYS.unique()):
        rows = predictions[predictions.TX_TIME_DAYS.eq(day)]
        rows = rows[["predictions", "CUSTOMER_ID", "TX_FRAUD"]]
        rows = rows[~rows.CUSTOMER_ID.isin(detected)]
        cards = rows.groupby("CUSTOMER_ID").max()
        cards = cards.sort_values(by="predictions", ascending=False)
        top = cards.reset_index(drop=False).head(top_k)
        caught = list(top[top.TX_FRAUD == 1].CUSTOMER_ID)
        per_day.append(len(caught) / top_k)
        detected.extend(caught)
    return float(sum(per_day) / len(per_day))
