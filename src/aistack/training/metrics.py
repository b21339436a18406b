"""Evaluation metrics over a scored frame with `label` and `score` columns.

Losses are wrapped in `lower_is_better`, so champion choice and gates read
their direction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from aistack.contract import lower_is_better


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


# Multi-class: `score` holds the predicted class; `proba_<class>` columns (training
# and batch scoring) hold each class's probability.


def accuracy(frame: pd.DataFrame) -> float:
    """Share of rows whose predicted class is the label."""
    return float(accuracy_score(frame["label"], frame["score"]))


def macro_f1(frame: pd.DataFrame) -> float:
    """F1 of each class (one against the rest), averaged with equal weights."""
    return float(f1_score(frame["label"], frame["score"], average="macro"))


def _log_loss(frame: pd.DataFrame) -> float:
    columns = [c for c in frame.columns if c.startswith(PROBA_PREFIX)]
    if not columns:
        return float("nan")
    classes = [float(c[len(PROBA_PREFIX) :]) for c in columns]
    return float(
        log_loss(
            frame["label"].astype(float), frame[columns].to_numpy(), labels=classes
        )
    )


PROBA_PREFIX = "proba_"
multiclass_log_loss = lower_is_better(_log_loss)
"""Cross-entropy of the class probabilities (lower is better; NaN without them)."""


# Regression: `score` holds the predicted value.


def _rmse(frame: pd.DataFrame) -> float:
    return float(root_mean_squared_error(frame["label"], frame["score"]))


def _mae(frame: pd.DataFrame) -> float:
    return float(mean_absolute_error(frame["label"], frame["score"]))


rmse = lower_is_better(_rmse)
"""Root mean squared error (lower is better)."""
mae = lower_is_better(_mae)
"""Mean absolute error (lower is better)."""


def r2(frame: pd.DataFrame) -> float:
    """Coefficient of determination: 1 - SS_res / SS_tot."""
    return float(r2_score(frame["label"], frame["score"]))
