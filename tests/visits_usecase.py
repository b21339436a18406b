"""Test-only: clinic visits keyed by a PII subject, with windowed features on
the patient (the subject's own entity) and on the clinic (other entities whose
windows hold the subject's visits). What `aistack forget` must reach in the
online aggregation state and in `ops.batch_accounting`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, Field
from sklearn.linear_model import LogisticRegression

from aistack.contract import (
    Aggregation,
    AggregationView,
    Batch,
    Gates,
    Labels,
    Serving,
    SilverTable,
    Split,
    Trainer,
    UseCase,
)
from aistack.training.metrics import roc_auc

START = datetime(2024, 3, 1)
PATIENTS, CLINICS, VISITS = 40, 5, 400
SUBJECT = "NID-000007"
"""The subject the tests erase: 10 visits, one of them quarantined (cost < 0)."""


class VisitParams(BaseModel):
    """Nothing to choose."""

    visits: int = Field(default=VISITS, ge=VISITS, le=VISITS)


def read_sources(params: VisitParams, seed: int) -> Iterator[Batch]:
    """400 visits in four batches: visit k by patient k % 40 at clinic k % 5,
    an hour apart; the subject's visit 207 has a negative cost (quarantined)."""
    k = np.arange(VISITS)
    cost = 50.0 + (k % 7) * 10.0
    cost[207] = -1.0
    table = pa.table(
        {
            "visit_id": k,
            "national_id": [f"NID-{p:06d}" for p in k % PATIENTS],
            "full_name": [f"Patient {p}" for p in k % PATIENTS],
            "clinic_id": k % CLINICS,
            "visited_at": [START + timedelta(hours=int(h)) for h in k],
            "cost": cost,
            "readmitted": (k % 3 == 0).astype(np.int64),
        }
    )
    for n, start in enumerate(range(0, VISITS, 100)):
        yield Batch("visits", f"day-{n}", table.slice(start, 100))


class Visit(pa_pl.DataFrameModel):
    """One visit: the patient (PII), the clinic, what it cost, the outcome."""

    visit_id: pl.Int64 = pa_pl.Field(ge=0)
    national_id: pl.String = pa_pl.Field(metadata={"pii": "key"})
    full_name: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    clinic_id: pl.Int64 = pa_pl.Field(ge=0)
    visited_at: pl.Datetime = pa_pl.Field()
    cost: pl.Float64 = pa_pl.Field(ge=0)
    readmitted: pl.Int64 = pa_pl.Field(isin=[0, 1])


class VisitRequest(BaseModel):
    """One visit to score."""

    visit_id: int | None = None
    national_id: str
    clinic_id: int
    visited_at: datetime
    cost: float


WINDOWS = (timedelta(days=30),)
patient_visits = AggregationView(
    name="patient_visits",
    source="silver.visits",
    entity="national_id",
    id="visit_id",
    timestamp="visited_at",
    aggregations=(
        Aggregation("count", WINDOWS, name="patient_visits_{window}"),
        Aggregation("sum", WINDOWS, column="cost", name="patient_cost_{window}"),
    ),
)
clinic_load = AggregationView(
    name="clinic_load",
    source="silver.visits",
    entity="clinic_id",
    id="visit_id",
    timestamp="visited_at",
    aggregations=(Aggregation("count", WINDOWS, name="clinic_visits_{window}"),),
)

use_case = UseCase(
    name="visits",
    description="test-only: clinic visits with windowed features on a PII subject",
    params=VisitParams,
    read_sources=read_sources,
    silver=(SilverTable("visits", "visits", lambda f: f, Visit, key=("visit_id",)),),
    views=(patient_visits, clinic_load),
    labels=Labels(
        table="silver.visits",
        id="visit_id",
        timestamp="visited_at",
        label="readmitted",
        columns=("national_id", "clinic_id", "cost"),
    ),
    split=Split(kind="time", fractions=(0.7, 0.3)),
    trainers=(Trainer("logistic", lambda seed: LogisticRegression()),),
    metrics={"roc_auc": roc_auc},
    gates=Gates(primary_metric="roc_auc"),
    serving=Serving(request=VisitRequest),
)
