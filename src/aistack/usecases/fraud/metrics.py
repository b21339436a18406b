"""Fraud evaluation metrics, as in the handbook."""

from __future__ import annotations

import pandas as pd

from aistack.contract import BusinessMetric
from aistack.training.metrics import average_precision, roc_auc, top_k_entity_precision

metrics = {
    "roc_auc": roc_auc,
    "average_precision": average_precision,
    "card_precision_at_100": top_k_entity_precision(
        "customer_id", "tx_datetime", k=100
    ),
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
