"""Entity-hash partitions: the same entity always lands in the same partition."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from aistack.sql import quote


def partition_of(column: str, part: int, parts: int) -> str:
    """SQL condition: rows of `column` whose hash falls in partition `part`.

    DuckDB's `hash` is deterministic across processes, so a worker and the client
    agree on every row's partition.
    """
    return f"hash({quote(column)}) % {int(parts)} = {int(part)}"


def split_rows(table: pa.Table, column: str, parts: int) -> list[pa.Table]:
    """`table`'s rows in `parts` partitions by the hash of `column` (order kept)."""
    con = duckdb.connect()
    con.register("rows_in", table.select([column]))
    found = con.execute(
        f"SELECT (hash({quote(column)}) % {int(parts)})::INTEGER FROM rows_in"
    ).fetchnumpy()
    index = next(iter(found.values()))
    index = np.asarray(index)
    return [table.filter(pa.array(index == p)) for p in range(parts)]
