"""Where fraud's raw batches come from: the simulator, or a folder of daily files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aistack.contract import Batch, PostgresTable
from aistack.errors import ConfigError
from aistack.usecases.fraud.simulator import (
    inject_bad_rows,
    simulate,
    split_by_day,
    transactions_as_strings,
)

PG_SCHEMES = ("postgresql://", "postgres://")
READERS = {".csv": "csv", ".parquet": "parquet", ".pkl": "pickle", ".pickle": "pickle"}
REFERENCE_SOURCES = ("customers", "terminals")


class FraudParams(BaseModel):
    """Run options of the fraud use case (`aistack run fraud --days 30 ...`)."""

    model_config = ConfigDict(extra="forbid")

    customers: int = Field(5000, ge=1, le=1_000_000, description="simulated customers")
    terminals: int = Field(10000, ge=1, le=1_000_000, description="simulated terminals")
    days: int = Field(183, ge=1, le=3660, description="simulated days")
    start_date: date = Field(date(2018, 4, 1), description="first simulated day")
    bad_rows: int = Field(0, ge=0, description="bad rows of each kind to inject")
    source: Path | str | None = Field(
        None,
        description="folder of daily CSV/Parquet files, or a PostgreSQL table "
        "(postgresql://user@host:port/db?table=transactions[&watermark=updated_at]) "
        "pulled incrementally, instead of the simulator",
    )
    allow_pickle: bool = Field(
        False,
        description="also read .pkl files from --source (a pickle can run code: "
        "only for files you trust)",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _folder_or_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith(PG_SCHEMES):
            return Path(value)
        return value

    @field_validator("source")
    @classmethod
    def _is_folder(cls, value: Path | str | None) -> Path | str | None:
        if isinstance(value, str):
            postgres_table(value)  # checks the URL names a table
        elif value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value


def postgres_table(url: str) -> PostgresTable:
    """The transactions table named by a `postgresql://...?table=NAME` source."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    table = query.pop("table", "")
    if not table:
        raise ValueError("a postgresql:// source needs ?table=NAME")
    watermark = query.pop("watermark", "updated_at")
    rest = parts._replace(query=urlencode(query)).geturl()
    return PostgresTable("transactions", rest, table, watermark=watermark)


def _read_file(path: Path) -> pa.Table:
    kind = READERS[path.suffix.lower()]
    if kind == "csv":
        options = pacsv.ConvertOptions(strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=options)
    if kind == "parquet":
        return pq.read_table(path)
    frame = pd.read_pickle(path)
    return pa.Table.from_pandas(frame, preserve_index=False)


def folder_batches(folder: Path, *, allow_pickle: bool = False) -> Iterator[Batch]:
    """One batch per file, named by the file; `customers.*`/`terminals.*`: profiles.

    Pickle files are refused unless `allow_pickle`: unpickling runs code.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in READERS)
    pickles = [p.name for p in files if READERS[p.suffix.lower()] == "pickle"]
    if pickles and not allow_pickle:
        msg = (
            f"--source: {', '.join(pickles)} is pickle data, which can run code when "
            "read; convert it to CSV/Parquet or pass --allow-pickle true"
        )
        raise ConfigError(msg)
    for path in files:
        source = path.stem if path.stem in REFERENCE_SOURCES else "transactions"
        yield Batch(source=source, id=path.name, data=_read_file(path))


def read_sources(params: FraudParams, seed: int) -> Iterator[Batch | PostgresTable]:
    """Profiles first (silver checks transactions against them), then daily batches.

    A PostgreSQL source is one pull of the transactions table's new rows.
    """
    if isinstance(params.source, str):
        yield postgres_table(params.source)
        return
    if params.source is not None:
        yield from folder_batches(params.source, allow_pickle=params.allow_pickle)
        return
    sim = simulate(
        n_customers=params.customers,
        n_terminals=params.terminals,
        n_days=params.days,
        start_date=params.start_date.isoformat(),
        seed=seed,
    )
    run = f"sim-s{seed}-c{params.customers}-t{params.terminals}-d{params.days}"
    yield Batch(source="customers", id=f"{run}/customers", data=sim.customers)
    yield Batch(source="terminals", id=f"{run}/terminals", data=sim.terminals)
    transactions = (
        inject_bad_rows(sim.transactions, n_per_kind=params.bad_rows, seed=seed)
        if params.bad_rows
        else transactions_as_strings(sim.transactions)
    )
    for day, rows in split_by_day(transactions):
        yield Batch(source="transactions", id=f"{run}/{day}", data=rows)
