"""Silver data contracts of the fraud use case (pandera, polars)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Optional

import pandera.polars as pa
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Customer(pa.DataFrameModel):
    """A card holder's profile: home location and spending habits."""

    customer_id: pl.Int64 = pa.Field(ge=0)
    x_customer_id: pl.Float64 = pa.Field(ge=0, le=100)
    y_customer_id: pl.Float64 = pa.Field(ge=0, le=100)
    mean_amount: pl.Float64 = pa.Field(ge=0)
    std_amount: pl.Float64 = pa.Field(ge=0)
    mean_nb_tx_per_day: pl.Float64 = pa.Field(ge=0)


class Terminal(pa.DataFrameModel):
    """A payment terminal and its location."""

    terminal_id: pl.Int64 = pa.Field(ge=0)
    x_terminal_id: pl.Float64 = pa.Field(ge=0, le=100)
    y_terminal_id: pl.Float64 = pa.Field(ge=0, le=100)


class Transaction(pa.DataFrameModel):
    """One card payment; `tx_fraud` is its label (known after the label delay)."""

    transaction_id: pl.Int64 = pa.Field(ge=0)
    tx_datetime: Annotated[pl.Datetime, "us", None]
    customer_id: pl.Int64 = pa.Field(ge=0)
    terminal_id: pl.Int64 = pa.Field(ge=0)
    tx_amount: pl.Float64 = pa.Field(ge=0)
    tx_fraud: pl.Int64 = pa.Field(isin=[0, 1])
    tx_fraud_scenario: Optional[pl.Int64] = pa.Field(  # noqa: UP045
        isin=[0, 1, 2, 3], nullable=True
    )
    # the row's version in a source that updates rows (PostgreSQL): latest wins
    updated_at: Optional[Annotated[pl.Datetime, "us", None]] = pa.Field(  # noqa: UP045
        nullable=True
    )


ID_MAX = 2**63 - 1  # ids are stored as BIGINT / Int64


class TransactionRequest(BaseModel):
    """One transaction to score online (the handbook's raw fields)."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: int | None = Field(
        None, ge=0, le=ID_MAX, description="Your id; optional."
    )
    customer_id: int = Field(ge=0, le=ID_MAX, description="Card holder id.")
    terminal_id: int = Field(ge=0, le=ID_MAX, description="Payment terminal id.")
    tx_amount: float = Field(ge=0, le=1e9, allow_inf_nan=False, description="Amount.")
    tx_datetime: datetime = Field(
        description="When the payment happened: an ISO 8601 date-time (UTC when "
        "it has no offset). Numbers are refused, not read as Unix times."
    )

    @field_validator("tx_datetime", mode="before")
    @classmethod
    def _not_a_number(cls, value: object) -> object:
        """A number is ambiguous (seconds? milliseconds?): only ISO strings."""
        if isinstance(value, int | float):
            raise ValueError("expected an ISO 8601 date-time string, not a number")
        return value

    @field_validator("tx_datetime")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        """Features are computed on naive UTC times, as in the simulator and silver."""
        if value.tzinfo is not None:
            try:
                return value.astimezone(UTC).replace(tzinfo=None)
            except OverflowError as exc:  # e.g. 0001-01-01T00:00+10:00
                raise ValueError(
                    "date-time out of range once converted to UTC"
                ) from exc
        return value
