"""Bronze: append raw batches, as text, with ingestion metadata.

Every source column is stored as a string (schema on read): a wrongly typed value
still lands in bronze, and silver decides what is valid. Ingesting a batch id that
the table already holds is a no-op: no new version, no duplicate rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from aistack.contract import Batch, PiiCodec, PostgresTable
from aistack.errors import ConfigError
from aistack.lake.delta import Lake
from aistack.lake.postgres import pull

BATCH_ID = "_batch_id"
SOURCE = "_source"
ROW = "_row"
INGESTED_AT = "_ingested_at"
METADATA_COLUMNS = (BATCH_ID, SOURCE, ROW, INGESTED_AT)


@dataclass
class IngestResult:
    """What one ingest did, per bronze table."""

    new_batches: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    skipped_batches: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


def bronze_table(source: str) -> str:
    """Bronze table name of a source."""
    return f"bronze.{source}"


def as_bronze_rows(
    batch: Batch,
    *,
    ingested_at: datetime,
    encrypt: Collection[str] = (),
    codec: PiiCodec | None = None,
) -> pa.Table:
    """The batch's columns as strings, plus the ingestion metadata columns.

    Columns named in `encrypt` (PII) are stored encrypted by `codec`.
    """
    data = batch.data
    columns = {name: data.column(name).cast(pa.string()) for name in data.column_names}
    for name in (c for c in encrypt if c in columns):
        if codec is None:
            raise ConfigError(f"bronze.{batch.source}: PII column {name!r} needs a key")
        columns[name] = pa.array(codec.encrypt(columns[name].to_pylist()), pa.string())
    n = data.num_rows
    columns[BATCH_ID] = pa.array([batch.id] * n, pa.string())
    columns[SOURCE] = pa.array([batch.source] * n, pa.string())
    columns[ROW] = pa.array(range(n), pa.int64())
    columns[INGESTED_AT] = pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def ingest(
    lake: Lake,
    batches: Iterable[Batch | PostgresTable],
    *,
    ingested_at: datetime,
    pii: Mapping[str, Collection[str]] | None = None,
    codec: PiiCodec | None = None,
) -> IngestResult:
    """Append every batch not yet in its bronze table, one commit per table.

    A `PostgresTable` is pulled here: its rows after bronze's watermark, as one
    batch (none when nothing is new). `pii` maps a source to its PII columns,
    stored encrypted by `codec` (a raw value never reaches the table).
    """
    pii = pii or {}
    result = IngestResult()
    known: dict[str, set[str]] = {}
    pending: dict[str, list[Batch]] = defaultdict(list)
    for item in batches:
        table = bronze_table(item.source)
        if table not in known:
            known[table] = lake.distinct(table, BATCH_ID)
        if isinstance(item, PostgresTable):
            pulled = pull(item, known=known[table])
            if pulled is None:
                continue
            item = pulled  # noqa: PLW2901 - the pull is the batch from here on
        batch = item
        if batch.id in known[table]:
            result.skipped_batches[table] = result.skipped_batches.get(table, 0) + 1
            continue
        known[table].add(batch.id)
        pending[table].append(batch)

    def rows(batch: Batch) -> pa.Table:
        encrypt = pii.get(batch.source, ())
        return as_bronze_rows(
            batch, ingested_at=ingested_at, encrypt=encrypt, codec=codec
        )

    for table, parts in pending.items():
        result.versions[table] = lake.write(
            table, _bronze_stream(parts, rows), mode="append", merge_schema=True
        )
        result.new_batches[table] = len(parts)
        result.new_rows[table] = sum(b.data.num_rows for b in parts)
    return result


def _bronze_stream(
    parts: list[Batch], rows: Callable[[Batch], pa.Table]
) -> pa.RecordBatchReader:
    """The batches' bronze rows as one stream, each batch converted as the writer
    reads it (bounded memory), in the schema of all of them (a column some
    batches lack is null there)."""
    schema = pa.unify_schemas(
        [rows(Batch(b.source, b.id, b.data.slice(0, 0))).schema for b in parts],
        promote_options="permissive",
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for part in parts:
            table = rows(part)
            n = table.num_rows
            aligned = pa.table(
                [
                    table.column(f.name).cast(f.type)
                    if f.name in table.column_names
                    else pa.nulls(n, f.type)
                    for f in schema
                ],
                schema=schema,
            )
            yield from aligned.to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())
