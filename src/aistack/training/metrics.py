"""Evaluation metrics over a scored frame with `label` and `score` columns."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def _has_both_classes(frame: pd.DataFrame) -> bool:
    return frame["label"].nunique() == 2  # noqa: PLR2004


def roc_auc(frame: pd.DataFrame) -> float:
    """Area under the ROC curve; NaN when the labels hold a single class."""
    if not _has_both_classes(frame):
        return float("nan")
    return float(roc_auc_score(frame["label"], frame["score"]))


def average_precision(frame: pd.DataFrame) -> float:
    """Average precision (area under precision-recall); NaN for a single class."""
    if not _has_both_classes(frame):
        return float("nan")
    return float(average_precision_score(frame["label"], frame["score"]))


def top_k_entity_precision(
    entity: str, timestamp: str, *, k: int
) -> Callable[[pd.DataFrame], float]:
    """Precision of the k highest-scored entities per day, averaged over days.

    An entity's daily score and label are its maxima that day: the handbook's
    card precision@k, which matches how an investigator team checks cards.
    """

    def metric(frame: pd.DataFrame) -> float:
        day = pd.to_datetime(frame[timestamp]).dt.floor("D")
        daily = (
            frame.assign(_day=day)
            .groupby(["_day", entity], sort=False)[["score", "label"]]
            .max()
            .reset_index()
        )
        precisions = [
            group.nlargest(k, "score")["label"].sum() / k
            for _, group in daily.groupby("_day", sort=True)
        ]
        return float(np.mean(precisions)) if precisions else float("nan")

    metric.__name__ = f"{entity}_precision_at_{k}"
    return metric
