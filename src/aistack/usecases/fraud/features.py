"""Fraud features, after the handbook: customer spending and terminal risk windows.

Windows are right-closed and left-open, as pandas' `rolling('Nd')` that the
handbook uses: (t - N days, t]. Terminal risk only counts transactions whose label
was known by t: the window is shifted back by the label delay.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from aistack.platform.usecase import Feature, FeatureView

WINDOWS_DAYS = (1, 7, 30)
LABEL_DELAY_DAYS = 7
_OPEN = "INTERVAL 1 MICROSECOND"


def _window(partition: str, days: int, *, shift_days: int = 0) -> str:
    start = f"(INTERVAL {days + shift_days} DAY - {_OPEN}) PRECEDING"
    end = f"INTERVAL {shift_days} DAY PRECEDING" if shift_days else "CURRENT ROW"
    order = f"PARTITION BY {partition} ORDER BY tx_datetime"
    return f"({order} RANGE BETWEEN {start} AND {end})"


def _customer_query() -> str:
    columns = []
    for d in WINDOWS_DAYS:
        columns.append(f"COUNT(*) OVER w{d} AS customer_nb_tx_{d}d")
        columns.append(f"AVG(tx_amount) OVER w{d} AS customer_avg_amount_{d}d")
    windows = ", ".join(f"w{d} AS {_window('customer_id', d)}" for d in WINDOWS_DAYS)
    return (
        "SELECT customer_id, tx_datetime AS event_time, "
        + ", ".join(columns)
        + f" FROM silver.transactions WINDOW {windows}"
    )


def _terminal_query() -> str:
    columns = []
    for d in WINDOWS_DAYS:
        count = f"COUNT(*) OVER w{d}"
        columns.append(f"{count} AS terminal_nb_tx_{d}d")
        columns.append(
            f"COALESCE(SUM(tx_fraud) OVER w{d} / NULLIF({count}, 0), 0.0)"
            f" AS terminal_risk_{d}d"
        )
    windows = ", ".join(
        f"w{d} AS {_window('terminal_id', d, shift_days=LABEL_DELAY_DAYS)}"
        for d in WINDOWS_DAYS
    )
    return (
        "SELECT terminal_id, tx_datetime AS event_time, "
        + ", ".join(columns)
        + f" FROM silver.transactions WINDOW {windows}"
    )


customer_spending = FeatureView(
    name="customer_spending",
    entity="customer_id",
    features=tuple(
        feature
        for d in WINDOWS_DAYS
        for feature in (
            Feature(
                f"customer_nb_tx_{d}d", 0.0, f"card transactions in the last {d} days"
            ),
            Feature(f"customer_avg_amount_{d}d", 0.0, f"mean amount over {d} days"),
        )
    ),
    query=_customer_query(),
    inputs=("silver.transactions",),
    ttl=timedelta(days=30),
)

terminal_risk = FeatureView(
    name="terminal_risk",
    entity="terminal_id",
    features=tuple(
        feature
        for d in WINDOWS_DAYS
        for feature in (
            Feature(
                f"terminal_nb_tx_{d}d", 0.0, f"labelled transactions over {d} days"
            ),
            Feature(f"terminal_risk_{d}d", 0.0, f"fraud share over {d} days, delayed"),
        )
    ),
    query=_terminal_query(),
    inputs=("silver.transactions",),
    ttl=timedelta(days=30 + LABEL_DELAY_DAYS),
)

NIGHT_LAST_HOUR = 6
WEEKEND_FIRST_DAY = 6  # polars: Monday = 1 ... Sunday = 7

request_features: dict[str, pl.Expr] = {
    "tx_amount": pl.col("tx_amount").cast(pl.Float64),
    "tx_during_weekend": (pl.col("tx_datetime").dt.weekday() >= WEEKEND_FIRST_DAY).cast(
        pl.Float64
    ),
    "tx_during_night": (pl.col("tx_datetime").dt.hour() <= NIGHT_LAST_HOUR).cast(
        pl.Float64
    ),
}
