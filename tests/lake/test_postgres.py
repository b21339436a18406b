"""PostgreSQL source: incremental pulls by watermark into bronze, latest wins in
silver, on a real PostgreSQL 15."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import polars as pl
import psycopg
import pytest

from aistack.contract import get_use_case
from aistack.errors import ConfigError
from aistack.lake.bronze import ingest
from aistack.lake.delta import Lake
from aistack.lake.silver import ACCOUNTING, build_silver, validate_rows
from aistack.runner import run
from aistack.settings import load_settings
from aistack.usecases.fraud.simulator import simulate
from aistack.usecases.fraud.source import postgres_table
from aistack.workspace import Workspace
from servers import create_database, free_port

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
TABLE = quote_plus("sales.Card Tx")  # a schema, and a name that needs quoting
COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "updated_at",
)


def transactions_spec():
    return {s.name: s for s in get_use_case("fraud").silver}["transactions"]


def make_table(url: str) -> None:
    with psycopg.connect(url) as con:
        con.execute(
            'CREATE SCHEMA sales; CREATE TABLE sales."Card Tx" ('
            '"TRANSACTION_ID" bigint PRIMARY KEY, "TX_DATETIME" timestamp, '
            '"CUSTOMER_ID" bigint, "TERMINAL_ID" bigint, '
            '"TX_AMOUNT" numeric(12, 2), "TX_FRAUD" int, '
            "updated_at timestamptz NOT NULL)"
        )


def upsert(url: str, rows: list[tuple]) -> None:
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.executemany(
            'INSERT INTO sales."Card Tx" VALUES (%s, %s, %s, %s, %s, %s, %s) '
            'ON CONFLICT ("TRANSACTION_ID") DO UPDATE SET '
            '"TX_AMOUNT" = EXCLUDED."TX_AMOUNT", "TX_FRAUD" = EXCLUDED."TX_FRAUD", '
            "updated_at = EXCLUDED.updated_at",
            rows,
        )


def tx(i: int, amount: float, updated: datetime, fraud: int = 0) -> tuple:
    return (i, datetime(2026, 1, 1, 7, i), i, 10 + i, amount, fraud, updated)


def test_pulls_increments_and_latest_version_wins(postgres, tmp_path) -> None:
    url = create_database(postgres, "shop")
    make_table(url)
    source = postgres_table(f"{url}?table={TABLE}")
    lake, spec = Lake(tmp_path), transactions_spec()
    upsert(url, [tx(1, 10.0, T0), tx(2, 20.0, T0), tx(3, 30.0, T0 + timedelta(1))])

    first = ingest(lake, [source], ingested_at=NOW)
    assert first.new_batches == {"bronze.transactions": 1}
    assert first.new_rows == {"bronze.transactions": 3}
    build_silver(lake, spec, processed_at=NOW)
    version = lake.version("bronze.transactions")
    again = ingest(lake, [source], ingested_at=NOW)  # nothing new: nothing written
    assert again.new_batches == {} and lake.version("bronze.transactions") == version

    later = T0 + timedelta(days=2)
    upsert(url, [tx(2, 25.5, later, fraud=1), tx(4, 40.0, later)])
    second = ingest(lake, [source], ingested_at=NOW)
    assert second.new_rows == {"bronze.transactions": 2}  # only rows after the mark
    result = build_silver(lake, spec, processed_at=NOW)
    assert (result.silver_rows, result.quarantined_rows) == (2, 0)

    silver = pl.from_arrow(lake.read("silver.transactions")).sort("transaction_id")
    assert silver.get_column("transaction_id").to_list() == [1, 2, 3, 4]
    assert silver.row(1, named=True)["tx_amount"] == 25.5  # the update won
    assert silver.row(1, named=True)["tx_fraud"] == 1
    bronze = pl.from_arrow(lake.read("bronze.transactions"))
    assert bronze.filter(pl.col("TRANSACTION_ID") == "2").height == 2  # history
    counts = pl.from_arrow(lake.read(ACCOUNTING))
    assert counts.get_column("replaced_rows").sum() == 1
    assert (
        counts.get_column("silver_rows").sum()
        - counts.get_column("replaced_rows").sum()
        == silver.height
    )
    assert lake.rows("bronze.transactions") == counts.get_column("bronze_rows").sum()


def test_versions_within_a_build_stale_and_duplicate_rows_are_quarantined() -> None:
    spec = transactions_spec()
    marks = [
        "2026-01-01 08:00",
        "2026-01-03 08:00",
        "2026-01-02 08:00",
        "2026-01-03 08:00",
        None,
        "2026-01-01 09:00",
    ]
    raw = pl.DataFrame(
        {
            "TRANSACTION_ID": ["1", "1", "1", "1", "2", "3"],
            "TX_DATETIME": ["2026-01-01 07:00"] * 6,
            "CUSTOMER_ID": ["1"] * 6,
            "TERMINAL_ID": ["1"] * 6,
            "TX_AMOUNT": ["1.0", "3.0", "2.0", "3.0", "5.0", "6.0"],
            "TX_FRAUD": ["0"] * 6,
            "updated_at": marks,
            "_batch_id": ["b"] * 6,
            "_ingested_at": [NOW] * 6,
        }
    )
    existing = pl.DataFrame(
        {"transaction_id": [2, 3], "updated_at": [datetime(2026, 1, 5), None]},
        schema={"transaction_id": pl.Int64, "updated_at": pl.Datetime("us")},
    )
    good, bad = validate_rows(raw, spec, existing_keys=existing)
    # key 1: v1, then v3; key 3: a version replaces a row that had none
    assert good.get_column("tx_amount").to_list() == [1.0, 3.0, 6.0]
    assert bad.get_column("_check").to_list() == [
        "stale_version",  # v2 after v3
        "duplicate_key",  # v3 again
        "duplicate_key",  # key 2 without a version, already in silver
    ]
    assert "older than the current" in bad.get_column("_reason")[0]


def test_an_unreachable_database_names_the_source(tmp_path) -> None:
    source = postgres_table(f"postgresql://x@127.0.0.1:{free_port()}/db?table=t")
    with pytest.raises(ConfigError, match="source transactions: cannot read t"):
        ingest(Lake(tmp_path), [source], ingested_at=NOW)


def test_a_source_url_without_a_table_is_refused() -> None:
    params = get_use_case("fraud").params
    with pytest.raises(ValueError, match=r"needs \?table=NAME"):
        params.model_validate({"source": "postgresql://u@127.0.0.1/db"})


def test_fraud_runs_from_a_postgresql_table(postgres, tmp_path) -> None:
    url = create_database(postgres, "fraud_source")
    make_table(url)
    sim = simulate(n_customers=60, n_terminals=120, n_days=35, seed=7)
    txs = sim.transactions.select(COLUMNS[:-1]).to_pylist()
    with psycopg.connect(url) as con, con.cursor() as cur:
        copy = 'COPY sales."Card Tx" FROM STDIN'
        with cur.copy(copy) as out:
            for r in txs:
                out.write_row([*r.values(), T0])
    uc = get_use_case("fraud")
    params = uc.params.model_validate({"source": f"{url}?table={TABLE}"})  # as the CLI
    ws = Workspace(load_settings(workspace=tmp_path / "ws", seed=7))
    report = run(uc, ws, params)
    assert report.ingest.new_rows == {"bronze.transactions": len(txs)}
    assert ws.lake.rows("silver.transactions") == len(txs)
    assert report.champion is not None
