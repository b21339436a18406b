"""Bronze: append-only raw text with ingestion metadata; batches are idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from aistack.contract import Batch
from aistack.lake.bronze import BATCH_ID, INGESTED_AT, ROW, SOURCE, ingest
from aistack.lake.delta import Lake

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def batch(batch_id: str, amounts: list[float]) -> Batch:
    return Batch(
        "payments", batch_id, pa.table({"id": range(len(amounts)), "amount": amounts})
    )


def test_ingest_stores_text_with_metadata(tmp_path) -> None:
    lake = Lake(tmp_path)
    result = ingest(lake, [batch("day-1", [1.5, 2.0])], ingested_at=NOW)
    assert result.new_rows == {"bronze.payments": 2}
    table = lake.read("bronze.payments")
    assert table.schema.field("amount").type == pa.string()
    assert table.column("amount").to_pylist() == ["1.5", "2"]
    assert set(table.column_names) >= {BATCH_ID, SOURCE, ROW, INGESTED_AT}
    assert table.column(BATCH_ID).to_pylist() == ["day-1", "day-1"]
    assert table.column(ROW).to_pylist() == [0, 1]


def test_same_batch_twice_is_a_no_op(tmp_path) -> None:
    lake = Lake(tmp_path)
    ingest(lake, [batch("day-1", [1.0]), batch("day-2", [2.0, 3.0])], ingested_at=NOW)
    version, rows = lake.version("bronze.payments"), lake.rows("bronze.payments")
    again = ingest(
        lake, [batch("day-1", [1.0]), batch("day-2", [2.0, 3.0])], ingested_at=NOW
    )
    assert again.skipped_batches == {"bronze.payments": 2}
    assert lake.version("bronze.payments") == version
    assert lake.rows("bronze.payments") == rows == 3
    # a new batch id appends, in one commit
    ingest(lake, [batch("day-1", [1.0]), batch("day-3", [4.0])], ingested_at=NOW)
    assert lake.version("bronze.payments") == version + 1
    assert lake.rows("bronze.payments") == 4
