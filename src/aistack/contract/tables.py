"""Sources and tables: raw batches and silver tables under a data contract."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa

from aistack.contract.names import _ident
from aistack.errors import DeclarationError

Pii = Literal["key", "encrypt"]
"""How a personal column is protected, declared on the contract column as
`pa_pl.Field(metadata={"pii": "key"})`.

key: silver keeps a keyed pseudonym (HMAC-SHA256), equal for equal values, so
the column still joins and identifies a subject; encrypt: silver keeps the value
encrypted (AES-GCM), recoverable with the key. Bronze encrypts both. A PII
column keeps its source name and is text (the protected value is text).
"""
PII_MODES: tuple[Pii, ...] = get_args(Pii)


class PiiCodec(Protocol):
    """What the lake needs to protect PII columns (keys held by governance)."""

    def pseudonym(self, values: Sequence[str | None]) -> list[str | None]:
        """Keyed pseudonym of each value (None stays None)."""
        ...

    def encrypt(self, values: Sequence[str | None]) -> list[str | None]:
        """Each value encrypted with its own random nonce (None stays None)."""
        ...

    def decrypt(self, values: Sequence[str | None]) -> list[str | None]:
        """Each encrypted value in clear (None stays None)."""
        ...


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
        self._check_pii()
        for column, target in self.references.items():
            if target.count(".") != 2 or not target.startswith("silver."):  # noqa: PLR2004
                msg = (
                    f"silver.{self.name}: reference of {column!r} is {target!r}, "
                    "expected 'silver.table.column'"
                )
                raise DeclarationError(msg)

    def _check_pii(self) -> None:
        for name, mode in self.pii.items():
            if mode not in PII_MODES:
                msg = (
                    f"silver.{self.name}: column {name!r} declares pii={mode!r}, "
                    f"expected one of {', '.join(PII_MODES)}"
                )
                raise DeclarationError(msg)
            if self.columns[name] not in (pl.String, pl.Utf8):
                msg = (
                    f"silver.{self.name}: pii column {name!r} is "
                    f"{self.columns[name]}, expected String (protected values "
                    "are stored as text)"
                )
                raise DeclarationError(msg)
        for name in (*self.key, *self.references):
            if self.pii.get(name, "key") != "key":
                msg = (
                    f"silver.{self.name}: key or reference column {name!r} must be "
                    "pii='key' (a pseudonym joins; an encrypted value does not)"
                )
                raise DeclarationError(msg)
        if self.latest_by in self.pii:
            msg = f"silver.{self.name}: latest_by {self.latest_by!r} cannot be pii"
            raise DeclarationError(msg)

    @property
    def pii(self) -> dict[str, Pii]:
        """Contract columns declaring `pii` in their metadata, and how."""
        schema = self.contract.to_schema()
        return {
            name: (col.metadata or {})["pii"]
            for name, col in schema.columns.items()
            if "pii" in (col.metadata or {})
        }

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


@dataclass(frozen=True)
class GoldTable:
    """A gold table derived whole from silver tables by one pure transform.

    `transform` takes one `pl.DataFrame` per input, as keyword arguments named
    by `inputs` (parameter name -> `silver.table`), and returns the table. The
    platform reads the inputs at their current versions, writes the result to
    `gold.<use case>_<name>` with those versions on the commit (its lineage),
    and writes nothing when the versions are the ones of the latest commit.
    `key` columns must be unique in the result.
    """

    name: str
    transform: Callable[..., pl.DataFrame]
    inputs: Mapping[str, str]
    key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _ident("gold table", self.name)
        if not self.inputs:
            raise DeclarationError(f"gold table {self.name}: declare its inputs")
        for parameter, table in self.inputs.items():
            _ident(f"input of gold table {self.name}", parameter)
            if not table.startswith("silver."):
                msg = (
                    f"gold table {self.name}: input {parameter!r} is {table!r}, "
                    "expected a silver table"
                )
                raise DeclarationError(msg)
