"""The patient table's data contract and the scoring request.

PII columns declare how silver protects them: the national id is the
subject's key (kept as a keyed pseudonym); name, birth date, address and phone
are kept encrypted. None of them is a model input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import pandera.polars as pa_pl
import polars as pl
from pydantic import BaseModel, Field

HORIZON_DAYS = 5 * 365
"""The label: death within this many days of the sample (see `patients`)."""


class Patient(pa_pl.DataFrameModel):
    """One sampled patient: identity (PII), clinical measures, the outcome."""

    national_id: pl.String = pa_pl.Field(metadata={"pii": "key"})
    full_name: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    date_of_birth: pl.String = pa_pl.Field(
        str_matches=r"^\d{4}-\d{2}-\d{2}$", metadata={"pii": "encrypt"}
    )
    address: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    phone: pl.String = pa_pl.Field(metadata={"pii": "encrypt"})
    sampled_at: pl.Datetime = pa_pl.Field()
    age: pl.Int64 = pa_pl.Field(ge=18, le=120)
    sex: pl.String = pa_pl.Field(isin=["F", "M"])
    kappa_flc: pl.Float64 = pa_pl.Field(gt=0)
    lambda_flc: pl.Float64 = pa_pl.Field(gt=0)
    creatinine: pl.Float64 = pa_pl.Field(gt=0, nullable=True)
    mgus: pl.Int64 = pa_pl.Field(isin=[0, 1])
    died_within_5y: pl.Int64 = pa_pl.Field(isin=[0, 1])


def patients(raw: pl.DataFrame) -> pl.DataFrame:
    """Extract columns renamed to the contract, and the label.

    `died_within_5y` is 1 when the patient died within HORIZON_DAYS of the
    sample (`death` 1, `futime` <= horizon), 0 when followed up alive or dead
    beyond the horizon (`futime` > horizon), and unknown (null: the row goes to
    quarantine) when follow-up ended alive before the horizon (censored).
    """
    futime = pl.col("futime").str.strip_chars().cast(pl.Int64, strict=False)
    death = pl.col("death").str.strip_chars().cast(pl.Int64, strict=False)
    label = (
        pl.when((death == 1) & (futime <= HORIZON_DAYS))
        .then(1)
        .when(futime > HORIZON_DAYS)
        .then(0)
        .otherwise(None)
    )
    return raw.rename({"kappa": "kappa_flc", "lambda": "lambda_flc"}).with_columns(
        label.cast(pl.Int64).alias("died_within_5y")
    )


class PatientRequest(BaseModel):
    """One patient to score: the sample's measures (no identity but the
    pseudonymous id silver gives it)."""

    national_id: str | None = Field(
        default=None, max_length=64, description="the patient's pseudonym (optional)"
    )
    sampled_at: datetime
    age: int = Field(ge=18, le=120)
    sex: Literal["F", "M"]
    kappa_flc: float = Field(gt=0, allow_inf_nan=False)
    lambda_flc: float = Field(gt=0, allow_inf_nan=False)
    creatinine: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    mgus: Literal[0, 1]
