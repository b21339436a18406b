"""Fraud features, after the handbook: customer spending and terminal risk windows.

Both views are declared aggregations, so the platform computes them the same way
for training (DuckDB SQL) and serving (online state updated by every event).
Windows are right-closed and left-open, as pandas' `rolling('Nd')` that the
handbook uses: (t - N days, t], the transaction itself included. Terminal risk
only counts transactions whose label was known by t: the window is shifted back
by the label delay.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from aistack.contract import Aggregation, AggregationView

WINDOWS = tuple(timedelta(days=d) for d in (1, 7, 30))
LABEL_DELAY_DAYS = 7
LABEL_DELAY = timedelta(days=LABEL_DELAY_DAYS)
# Transactions may reach the scorer out of order (offline terminals, retries):
# up to a day late they are served exactly and not flagged.
ALLOWED_LATENESS = timedelta(days=1)

customer_spending = AggregationView(
    name="customer_spending",
    source="silver.transactions",
    entity="customer_id",
    id="transaction_id",
    timestamp="tx_datetime",
    allowed_lateness=ALLOWED_LATENESS,
    aggregations=(
        Aggregation(
            "count",
            WINDOWS,
            name="customer_nb_tx_{window}",
            description="card transactions in the window",
        ),
        Aggregation(
            "mean",
            WINDOWS,
            column="tx_amount",
            name="customer_avg_amount_{window}",
            description="mean amount in the window",
        ),
    ),
)

terminal_risk = AggregationView(
    name="terminal_risk",
    source="silver.transactions",
    entity="terminal_id",
    id="transaction_id",
    timestamp="tx_datetime",
    allowed_lateness=ALLOWED_LATENESS,
    aggregations=(
        Aggregation(
            "count",
            WINDOWS,
            shift=LABEL_DELAY,
            name="terminal_nb_tx_{window}",
            description="transactions in the window, shifted by the label delay",
        ),
        Aggregation(
            "mean",
            WINDOWS,
            column="tx_fraud",
            shift=LABEL_DELAY,
            fill=0.0,
            name="terminal_risk_{window}",
            description="fraud share in the window, shifted by the label delay",
        ),
    ),
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
