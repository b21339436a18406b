"""Fraud evaluation metrics, as in the handbook.

They are computed on the handbook's test set (see `Evaluation` in the use case:
transactions of cards known compromised before the test day are left out).
"""

from __future__ import annotations

import pandas as pd

from aistack.contract import BusinessMetric, Metric
from aistack.training.metrics import DailyEntityPrecision, average_precision, roc_auc

metrics: dict[str, Metric] = {
    "roc_auc": roc_auc,
    "average_precision": average_precision,
    # the handbook's card precision@100: daily, cards detected earlier removed
    "card_precision_at_100": DailyEntityPrecision("customer_id", "tx_datetime", k=100),
}


def caught(frame: pd.DataFrame) -> pd.Series:
    """1 when a fraudulent payment was stopped, 0 when it went through; NaN if legit."""
    return frame["decision"].astype(float).where(frame["label"] == 1)


fraud_caught = BusinessMetric(
    name="fraud_caught",
    kind="proportion",
    outcome=caught,
    minimum_detectable_effect=0.05,
)
