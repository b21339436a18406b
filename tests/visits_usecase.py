"""Test-only: clinic visits keyed by a PII subject, with windowed features on
the patient (the subject's own entity) and on the clinic (other entities whose
windows hold the subject's visits). What `aistack forget` must reach in the
online aggregation state and in `ops.batch_accounting`.

`versions_use_case` adds patient records kept latest-wins by `updated_at` and
keyed by the PII subject itself: erasing the subject erases rows that replaced
earlier versions (`replaced_rows` in the accounting)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
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


def read_versions(params: VisitParams, seed: int) -> Iterator[Batch]:
    """The visits, then patient records in four batches: every patient's first
    version on day 0; the subject updated on days 1, 2 and 3, with a repeated
    version (day 2) and a stale one (day 3) held; patient 8 updated on day 1
    (stale again on day 2), patient 9 on day 3."""
    yield from read_sources(params, seed)
    day = timedelta(days=1)
    records = [
        [(p, START) for p in range(PATIENTS)],
        [(7, START + day), (8, START + day)],
        [(7, START + day), (7, START + 2 * day), (8, START)],
        [(7, START), (7, START + 3 * day), (9, START + 3 * day)],
    ]
    for n, rows in enumerate(records):
        table = pa.table(
            {
                "national_id": [f"NID-{p:06d}" for p, _ in rows],
                "full_name": [f"Patient {p} v{i}" for i, (p, _) in enumerate(rows)],
                "updated_at": [at for _, at in rows],
            }
        )
        yield Batch("patients", f"day-{n}", table)


class PatientRecord(pa_pl.DataFrameModel):
    """A patient's record, one current version per patient (PII key)."""

    national_id: pl.String = pa_pl.Field(metadata={"pii": "key"})
    full_name: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    updated_at: pl.Datetime = pa_pl.Field()


patients = SilverTable(
    "patients",
    "patients",
    lambda f: f,
    PatientRecord,
    key=("national_id",),
    latest_by="updated_at",
)
versions_use_case = replace(
    use_case,
    name="visit_versions",
    read_sources=read_versions,
    silver=(*use_case.silver, patients),
)


def without_subject(params: VisitParams, seed: int) -> Iterator[Batch]:
    """The batches of `read_versions` without the subject's rows: what bronze,
    silver and quarantine hold after the subject is erased."""
    for batch in read_versions(params, seed):
        keep = pc.not_equal(batch.data.column("national_id"), SUBJECT)
        yield Batch(batch.source, batch.id, batch.data.filter(keep))
