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
