"""A second, tiny use case defined only in the tests: breast cancer exams.

It proves the platform knows no use case: it runs through the same API as fraud.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
from pydantic import BaseModel
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aistack.contract import (
    Batch,
    Feature,
    FeatureView,
    Gates,
    Labels,
    SilverTable,
    Split,
    Trainer,
    UseCase,
)
from aistack.training.metrics import average_precision, roc_auc

FEATURES = ("mean_radius", "mean_texture", "mean_concavity", "worst_area")


class CancerParams(BaseModel):
    rows: int = 569


class Exam(pa_pl.DataFrameModel):
    exam_id: pl.Int64 = pa_pl.Field(ge=0)
    patient_id: pl.Int64 = pa_pl.Field(ge=0)
    exam_time: pl.Datetime = pa_pl.Field()
    mean_radius: pl.Float64 = pa_pl.Field(gt=0)
    mean_texture: pl.Float64 = pa_pl.Field(gt=0)
    mean_concavity: pl.Float64 = pa_pl.Field(ge=0)
    worst_area: pl.Float64 = pa_pl.Field(gt=0)
    malignant: pl.Int64 = pa_pl.Field(isin=[0, 1])


def cancer_batches(params: CancerParams, seed: int) -> Iterator[Batch]:
    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))[: params.rows]
    start = datetime(2024, 1, 1)
    table = pa.table(
        {
            "exam_id": np.arange(len(order)),
            "patient_id": np.arange(len(order)),
            "exam_time": [start + timedelta(hours=6 * i) for i in range(len(order))],
            **{
                name: data.data[
                    order, list(data.feature_names).index(name.replace("_", " "))
                ]
                for name in FEATURES
            },
            # sklearn: 0 = malignant; the label here is 1 = malignant
            "malignant": 1 - data.target[order],
        }
    )
    for week in range(0, len(order), 28):
        yield Batch("exams", f"week-{week // 28:03d}", table.slice(week, 28))


def lower(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def cancer_use_case(*, extra_trainers: tuple[Trainer, ...] = ()) -> UseCase:
    view = FeatureView(
        name="exam_measures",
        entity="patient_id",
        features=tuple(Feature(f, 0.0) for f in FEATURES),
        query="SELECT patient_id, exam_time AS event_time, "
        + ", ".join(FEATURES)
        + " FROM silver.exams",
        inputs=("silver.exams",),
        ttl=timedelta(days=1),
    )
    return UseCase(
        name="cancer",
        description="test-only: breast cancer exams",
        params=CancerParams,
        read_sources=cancer_batches,
        silver=(SilverTable("exams", "exams", lower, Exam, key=("exam_id",)),),
        views=(view,),
        labels=Labels(
            table="silver.exams",
            id="exam_id",
            timestamp="exam_time",
            label="malignant",
            columns=("patient_id",),
            delay=timedelta(0),
        ),
        split=Split(train_days=100, delay_days=0, test_days=42),
        trainers=(
            Trainer(
                "logistic",
                lambda seed: make_pipeline(
                    StandardScaler(), LogisticRegression(random_state=seed)
                ),
                supervised=True,
            ),
            *extra_trainers,
        ),
        metrics={"roc_auc": roc_auc, "average_precision": average_precision},
        gates=Gates(
            primary_metric="roc_auc",
            metric_floors={"roc_auc": 0.8},
            irrelevant_columns=("exam_id",),
            monotonic={"worst_area": "increasing"},
        ),
    )


def constant_model(seed: int) -> DummyClassifier:
    """A deliberately broken model: the same score for everyone."""
    return DummyClassifier(strategy="prior")


def id_reading_model(seed: int) -> LogisticRegression:
    """A deliberately broken model: it learns from the row id."""
    return LogisticRegression(random_state=seed)
