"""Sources and tables: raw batches and silver tables under a data contract."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa

from aistack.contract.names import _ident
from aistack.errors import DeclarationError


@dataclass(frozen=True)
class Batch:
    """One batch of raw rows from a source; ingesting the same id twice is a no-op."""

    source: str
    id: str
    data: pa.Table

    def __post_init__(self) -> None:
        _ident("source", self.source)
        if not self.id:
            raise DeclarationError(f"batch of source {self.source}: empty batch id")


@dataclass(frozen=True)
class PostgresTable:
    """A PostgreSQL table pulled into bronze incrementally by a watermark column.

    Each pull reads the rows whose `watermark` is after the largest one already
    in bronze (recorded in the batch ids, so it commits with the rows) and lands
    them as one batch; a pull that finds no new row writes nothing. `table` may
    be `schema.table`; `url` is a libpq URI (`postgresql://user@host:port/db`).
    """

    source: str
    url: str
    table: str
    watermark: str = "updated_at"

    def __post_init__(self) -> None:
        _ident("source", self.source)
        if not self.url.startswith(("postgresql://", "postgres://")):
            msg = f"source {self.source}: url must start with postgresql://"
            raise DeclarationError(msg)
        if not self.table or not self.watermark:
            msg = f"source {self.source}: table and watermark column are required"
            raise DeclarationError(msg)


@dataclass(frozen=True)
class SilverTable:
    """A trusted entity table built from one bronze source under a data contract.

    `transform` renames and selects raw (string) columns, one row out per row in;
    the platform then types each column to the contract's dtype, validates, drops
    duplicate keys and checks references; every rejected row goes to quarantine.
    `references` maps a column to `silver.table.column`.

    With `latest_by` (a contract column, e.g. `updated_at`) a repeated key is an
    update: a row strictly newer than the key's current version replaces it
    (latest wins, no version is the oldest; every version stays in bronze); a
    row with the same version (or none) is a duplicate and an older one is
    stale: both go to quarantine.
    """

    name: str
    source: str
    transform: Callable[[pl.DataFrame], pl.DataFrame]
    contract: type[pa_pl.DataFrameModel]
    key: tuple[str, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)
    latest_by: str | None = None

    def __post_init__(self) -> None:
        _ident("silver table", self.name)
        _ident("source", self.source)
        columns = set(self.columns)
        if self.latest_by is not None and not self.key:
            msg = f"silver.{self.name}: latest_by needs a key (which rows are updates)"
            raise DeclarationError(msg)
        latest = () if self.latest_by is None else (self.latest_by,)
        for column in (*self.key, *self.references, *latest):
            if column not in columns:
                msg = f"silver.{self.name}: column {column!r} is not in the contract"
                raise DeclarationError(msg)
        for column, target in self.references.items():
            if target.count(".") != 2 or not target.startswith("silver."):  # noqa: PLR2004
                msg = (
                    f"silver.{self.name}: reference of {column!r} is {target!r}, "
                    "expected 'silver.table.column'"
                )
                raise DeclarationError(msg)

    @property
    def columns(self) -> dict[str, pl.DataType]:
        """Contract column names and their polars dtypes, in contract order."""
        schema = self.contract.to_schema()
        return {name: col.dtype.type for name, col in schema.columns.items()}

    @property
    def optional_columns(self) -> set[str]:
        """Contract columns a source may leave out (declared `Optional`)."""
        schema = self.contract.to_schema()
        return {name for name, col in schema.columns.items() if not col.required}
