"""PostgreSQL source: pull a table's new rows into one bronze batch per pull.

New rows are those whose watermark column is after the largest watermark that
bronze already holds for the table. That watermark is read back from the batch
ids (`postgresql:<table>:<watermark>:<first>..<last>`), which commit together
with the rows: a pull killed before its commit is simply redone, and a re-run
with nothing new writes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pyarrow as pa
from psycopg import sql as pgsql

from aistack.contract import Batch, PostgresTable
from aistack.errors import ConfigError
from aistack.sql import quote, quote_qualified

FETCH_ROWS = 50_000


def batch_prefix(spec: PostgresTable) -> str:
    """Start of the ids of every batch pulled from `spec`'s table."""
    return f"postgresql:{spec.table}:{spec.watermark}:"


def last_watermark(batch_ids: set[str], spec: PostgresTable) -> datetime | None:
    """Largest watermark already pulled from the table, from bronze's batch ids."""
    prefix = batch_prefix(spec)
    ends = [
        datetime.fromisoformat(b[len(prefix) :].rsplit("..", 1)[1])
        for b in batch_ids
        if b.startswith(prefix)
    ]
    return max(ends, default=None)


def _naive_utc(value: object) -> object:
    """Timestamps as naive UTC, as everywhere else in the lake."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _query(spec: PostgresTable, after: datetime | None) -> pgsql.Composed:
    mark = pgsql.SQL(quote(spec.watermark))
    text = pgsql.SQL("SELECT * FROM {} WHERE {} IS NOT NULL").format(
        pgsql.SQL(quote_qualified(spec.table)), mark
    )
    if after is not None:
        text += pgsql.SQL(" AND {} > %(after)s").format(mark)
    return text + pgsql.SQL(" ORDER BY {}").format(mark)


def _read(spec: PostgresTable, after: datetime | None) -> pa.Table:
    """The table's rows after `after` (all rows when None), in watermark order."""
    try:
        with (
            psycopg.connect(spec.url, connect_timeout=10) as con,
            con.cursor(name="aistack_pull") as cur,  # server side: streamed
        ):
            con.execute("SET TIME ZONE 'UTC'")  # naive watermarks are UTC
            params = None if after is None else {"after": after}
            cur.execute(_query(spec, after), params)
            parts: list[pa.Table] = []
            while rows := cur.fetchmany(FETCH_ROWS):
                names = [c.name for c in cur.description or ()]
                columns = list(zip(*rows, strict=True))
                parts.append(
                    pa.table(
                        {
                            n: pa.array([_naive_utc(v) for v in col])
                            for n, col in zip(names, columns, strict=True)
                        }
                    )
                )
    except psycopg.Error as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        msg = f"source {spec.source}: cannot read {spec.table} from PostgreSQL: {first}"
        raise ConfigError(msg) from exc
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")


def pull(spec: PostgresTable, *, known: set[str]) -> Batch | None:
    """The table's rows not yet in bronze as one batch; None when there are none.

    `known` is the batch ids bronze already holds for the source.
    """
    after = last_watermark(known, spec)
    data = _read(spec, after)
    if data.num_rows == 0:
        return None
    if spec.watermark not in data.column_names:
        msg = f"source {spec.source}: {spec.table} has no column {spec.watermark!r}"
        raise ConfigError(msg)
    marks = data.column(spec.watermark)
    first, last = marks[0].as_py(), marks[-1].as_py()
    if not isinstance(last, datetime):
        msg = (
            f"source {spec.source}: watermark {spec.watermark!r} is "
            f"{marks.type}, expected a timestamp"
        )
        raise ConfigError(msg)
    batch_id = f"{batch_prefix(spec)}{first.isoformat()}..{last.isoformat()}"
    return Batch(source=spec.source, id=batch_id, data=data)
