"""Fraud evaluation metrics, as in the handbook."""

from __future__ import annotations

from aistack.platform.metrics import average_precision, roc_auc, top_k_entity_precision

metrics = {
    "roc_auc": roc_auc,
    "average_precision": average_precision,
    "card_precision_at_100": top_k_entity_precision(
        "customer_id", "tx_datetime", k=100
    ),
}
