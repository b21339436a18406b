"""Silver: every bad row quarantined with its reason; bronze = silver + quarantine."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aistack.contract import Batch, SilverTable, get_use_case
from aistack.errors import ContractError, DeclarationError
from aistack.lake import silver as silver_mod
from aistack.lake.bronze import ingest
from aistack.lake.delta import Lake
from aistack.lake.silver import ACCOUNTING, build_silver, validate_rows
from aistack.usecases.fraud.simulator import (
    ALL_BAD_ROW_KINDS,
    inject_bad_rows,
    simulate,
    split_by_day,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fraud_batches(*, bad: int) -> list[Batch]:
    sim = simulate(n_customers=100, n_terminals=200, n_days=10, seed=3)
    txs = inject_bad_rows(sim.transactions, n_per_kind=bad, seed=3)
    return [
        Batch("customers", "c", sim.customers),
        Batch("terminals", "t", sim.terminals),
        *(Batch("transactions", day, rows) for day, rows in split_by_day(txs)),
    ]


def build_all(lake: Lake) -> dict[str, silver_mod.SilverResult]:
    return {
        spec.name: build_silver(lake, spec, processed_at=NOW)
        for spec in get_use_case("fraud").silver
    }


def test_every_bad_row_kind_is_quarantined_with_reason(tmp_path) -> None:
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=3), ingested_at=NOW)
    result = build_all(lake)["transactions"]
    quarantine = pl.from_arrow(lake.read("quarantine.transactions"))
    assert result.quarantined_rows == quarantine.height == 3 * len(ALL_BAD_ROW_KINDS)
    checks = quarantine.get_column("_check").to_list()
    reasons = " | ".join(quarantine.get_column("_reason").to_list())
    assert sum("dtype(Float64)" in c for c in checks) == 3  # wrong_type: "abc"
    assert sum(c.startswith("not_nullable") for c in checks) == 3  # nulls
    assert sum("greater_than_or_equal_to(0)" in c for c in checks) == 3  # negative
    assert sum("duplicate_key" in c for c in checks) == 3
    assert sum(c == "foreign_key" for c in checks) == 6  # unknown customer/terminal
    assert "cannot parse 'abc' as Float64" in reasons
    assert "is not in silver.customers.customer_id" in reasons
    assert set(quarantine.get_column("_column").to_list()) >= {
        "tx_amount",
        "transaction_id",
        "customer_id",
        "terminal_id",
    }
    # raw values are kept as they arrived
    assert "abc" in quarantine.get_column("TX_AMOUNT").to_list()


def test_accounting_invariant_holds_and_is_recorded(tmp_path) -> None:
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=2), ingested_at=NOW)
    build_all(lake)
    accounting = pl.from_arrow(lake.read(ACCOUNTING))
    bronze = pl.from_arrow(lake.read("bronze.transactions")).group_by("_batch_id").len()
    silver = pl.from_arrow(lake.read("silver.transactions")).group_by("_batch_id").len()
    quarantine = (
        pl.from_arrow(lake.read("quarantine.transactions")).group_by("_batch_id").len()
    )
    for row in accounting.filter(pl.col("table") == "silver.transactions").iter_rows(
        named=True
    ):
        b = bronze.filter(pl.col("_batch_id") == row["_batch_id"])["len"].sum()
        s = silver.filter(pl.col("_batch_id") == row["_batch_id"])["len"].sum()
        q = quarantine.filter(pl.col("_batch_id") == row["_batch_id"])["len"].sum()
        assert b == s + q == row["bronze_rows"]
        assert (s, q) == (row["silver_rows"], row["quarantined_rows"])


def test_rerun_changes_nothing(tmp_path) -> None:
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=1), ingested_at=NOW)
    build_all(lake)
    names = ["silver.transactions", "quarantine.transactions", ACCOUNTING]
    before = {n: (lake.version(n), lake.rows(n)) for n in names}
    results = build_all(lake)
    assert {n: (lake.version(n), lake.rows(n)) for n in names} == before
    assert results["transactions"].batches == 0


def test_recovers_after_a_crash_between_commits(tmp_path, monkeypatch) -> None:
    """Quarantine committed, then the process died before silver: re-run completes."""
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=2), ingested_at=NOW)
    spec = {s.name: s for s in get_use_case("fraud").silver}
    for name in ("customers", "terminals"):
        build_silver(lake, spec[name], processed_at=NOW)

    def die_on_silver(lake_: Lake, spec_: SilverTable, rows, inputs, **_) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(silver_mod, "_write_silver", die_on_silver)
    with pytest.raises(KeyboardInterrupt):
        build_silver(lake, spec["transactions"], processed_at=NOW)
    monkeypatch.undo()
    assert lake.exists("quarantine.transactions")
    assert not lake.exists("silver.transactions")
    quarantined = lake.rows("quarantine.transactions")
    result = build_silver(lake, spec["transactions"], processed_at=NOW)
    assert lake.rows("quarantine.transactions") == quarantined  # not written twice
    assert lake.rows("silver.transactions") + quarantined == lake.rows(
        "bronze.transactions"
    )
    assert result.quarantined_rows == quarantined


def test_transform_that_loses_rows_is_refused_and_writes_nothing(tmp_path) -> None:
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=0), ingested_at=NOW)
    good = {s.name: s for s in get_use_case("fraud").silver}["customers"]
    lossy = SilverTable("customers", "customers", lambda f: f.head(3), good.contract)
    with pytest.raises(DeclarationError, match="one row per input row"):
        build_silver(lake, lossy, processed_at=NOW)
    assert not lake.exists("silver.customers")
    assert not lake.exists(ACCOUNTING)


def test_accounting_violation_raises_before_any_write(tmp_path, monkeypatch) -> None:
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=0), ingested_at=NOW)
    spec = {s.name: s for s in get_use_case("fraud").silver}["customers"]
    real = silver_mod.validate_rows

    def drop_one(*args, **kwargs):
        good, bad = real(*args, **kwargs)
        return good.head(good.height - 1), bad

    monkeypatch.setattr(silver_mod, "validate_rows", drop_one)
    with pytest.raises(ContractError, match="nothing was written"):
        build_silver(lake, spec, processed_at=NOW)
    assert not lake.exists("silver.customers")
    assert not lake.exists(ACCOUNTING)


def test_chunks_stream_to_files_that_one_commit_records(tmp_path, monkeypatch) -> None:
    """Each chunk's silver rows are written as it is checked (bounded memory) and
    recorded by one commit; a check failing in a later chunk leaves no file."""
    monkeypatch.setattr(silver_mod, "CHUNK_ROWS", 1)  # every batch its own chunk
    lake = Lake(tmp_path)
    ingest(lake, fraud_batches(bad=0), ingested_at=NOW)
    spec = {s.name: s for s in get_use_case("fraud").silver}
    for name in ("customers", "terminals"):
        build_silver(lake, spec[name], processed_at=NOW)
    real, calls = silver_mod.validate_rows, []

    def fail_third(*args, **kwargs):
        good, bad = real(*args, **kwargs)
        calls.append(1)
        return (good.head(good.height - 1) if len(calls) == 3 else good), bad

    monkeypatch.setattr(silver_mod, "validate_rows", fail_third)
    with pytest.raises(ContractError, match="nothing was written"):
        build_silver(lake, spec["transactions"], processed_at=NOW)
    folder = lake.path("silver.transactions")
    assert not lake.exists("silver.transactions")
    assert not list(folder.glob("*.parquet"))  # the first two chunks' files: gone
    monkeypatch.setattr(silver_mod, "validate_rows", real)
    result = build_silver(lake, spec["transactions"], processed_at=NOW)
    assert lake.version("silver.transactions") == 0  # one commit
    assert len(lake.file_paths("silver.transactions")) == result.batches == 10
    assert sorted(p.name for p in folder.glob("*.parquet")) == sorted(
        lake.file_paths("silver.transactions")
    )
    assert lake.rows("silver.transactions") == lake.rows("bronze.transactions")


def test_missing_column_quarantines_rows_with_reason() -> None:
    spec = {s.name: s for s in get_use_case("fraud").silver}["terminals"]
    raw = pl.DataFrame(
        {
            "TERMINAL_ID": ["1", "2"],
            "X_TERMINAL_ID": ["3.0", "4.0"],
            "_batch_id": ["b", "b"],
            "_ingested_at": [NOW, NOW],
            "_row": [0, 1],
            "_source": ["t", "t"],
        }
    )
    good, bad = validate_rows(raw, spec)
    assert good.height == 0
    assert bad.height == 2
    assert "column 'y_terminal_id' is missing" in bad.get_column("_reason")[0]


def test_optional_columns_may_be_absent() -> None:
    spec = {s.name: s for s in get_use_case("fraud").silver}["transactions"]
    raw = pl.DataFrame(
        {
            "TRANSACTION_ID": ["1"],
            "TX_DATETIME": ["2018-04-01 10:00:00"],
            "CUSTOMER_ID": ["1"],
            "TERMINAL_ID": ["2"],
            "TX_AMOUNT": ["10.5"],
            "TX_FRAUD": ["0"],
            "_batch_id": ["b"],
            "_ingested_at": [NOW],
        }
    )
    good, bad = validate_rows(raw, spec)
    assert bad.height == 0
    assert good.get_column("tx_amount").to_list() == [10.5]
    assert good.get_column("tx_fraud_scenario").to_list() == [None]


def test_contract_columns_come_from_pandera() -> None:
    spec = {s.name: s for s in get_use_case("fraud").silver}["transactions"]
    assert spec.columns["tx_amount"] == pl.Float64
    assert "tx_fraud_scenario" in spec.optional_columns


def test_a_hostile_column_name_is_data_not_sql(tmp_path) -> None:
    lake = Lake(tmp_path)
    hostile = "A\", error('INJECTED') AS \"x"
    batches = fraud_batches(bad=0)
    batches = [
        Batch(b.source, b.id, b.data.append_column(hostile, b.data.column(0)))
        if b.source == "transactions"
        else b
        for b in batches
    ]
    ingest(lake, batches, ingested_at=NOW)
    results = build_all(lake)  # would raise INJECTED if the name reached SQL as code
    tx = results["transactions"]
    assert tx.bronze_rows == tx.silver_rows + tx.quarantined_rows > 0
    assert hostile not in lake.read("silver.transactions").column_names


def assert_accounted(lake: Lake, table: str = "silver.transactions") -> None:
    """Per batch: bronze = silver + quarantine, and the accounting table agrees."""
    name = table.split(".", 1)[1]

    def per_batch(t: str) -> dict[str, int]:
        frame = pl.from_arrow(lake.read(t, columns=["_batch_id"]))
        return dict(frame.group_by("_batch_id").len().iter_rows())

    bronze, silver = per_batch(f"bronze.{name}"), per_batch(table)
    held = per_batch(f"quarantine.{name}")
    accounting = pl.from_arrow(lake.read(ACCOUNTING)).filter(pl.col("table") == table)
    assert accounting.get_column("_batch_id").is_unique().all()
    for row in accounting.iter_rows(named=True):
        batch = row["_batch_id"]
        s, q = silver.get(batch, 0), held.get(batch, 0)
        assert bronze[batch] == s + q == row["bronze_rows"], batch
        assert (s, q) == (row["silver_rows"], row["quarantined_rows"]), batch


LATE_CUSTOMERS = {2, 5, 11, 17}


def late_customer_lake(tmp_path) -> tuple[Lake, int]:
    """Transactions of three customers that arrive a batch after them, plus
    rows that are bad for other reasons; returns the lake and those customers'
    transaction count."""
    sim = simulate(n_customers=30, n_terminals=60, n_days=6, seed=5)
    txs = inject_bad_rows(sim.transactions, n_per_kind=1, seed=5)
    ids = pa.array(sorted(LATE_CUSTOMERS))
    early = sim.customers.filter(pc.invert(pc.is_in(sim.customers["CUSTOMER_ID"], ids)))
    lake = Lake(tmp_path)
    ingest(
        lake,
        [
            Batch("customers", "c", early),
            Batch("terminals", "t", sim.terminals),
            *(Batch("transactions", day, rows) for day, rows in split_by_day(txs)),
        ],
        ingested_at=NOW,
    )
    build_all(lake)
    late = sim.customers.filter(pc.is_in(sim.customers["CUSTOMER_ID"], ids))
    ingest(lake, [Batch("customers", "c-late", late)], ingested_at=NOW)
    build_all(lake)
    clean = sim.transactions.filter(pc.is_in(sim.transactions["CUSTOMER_ID"], ids))
    return lake, clean.num_rows


def transactions_spec() -> SilverTable:
    return {s.name: s for s in get_use_case("fraud").silver}["transactions"]


def test_retry_releases_rows_whose_reference_arrived_late(tmp_path) -> None:
    lake, expected = late_customer_lake(tmp_path)
    held_before = lake.rows("quarantine.transactions")
    silver_before = lake.rows("silver.transactions")
    result = silver_mod.retry_quarantine(lake, transactions_spec(), processed_at=NOW)
    assert result.released_rows == expected > 0
    assert lake.rows("silver.transactions") == silver_before + expected
    assert lake.rows("quarantine.transactions") == held_before - expected
    assert result.still_quarantined == held_before - expected
    released = pl.from_arrow(lake.read("silver.transactions"))
    assert released.get_column("transaction_id").is_unique().all()
    assert LATE_CUSTOMERS & set(released.get_column("customer_id").to_list())
    held = pl.from_arrow(lake.read("quarantine.transactions"))
    still = held.filter(pl.col("_check") == "foreign_key")["CUSTOMER_ID"].to_list()
    assert not LATE_CUSTOMERS & {int(c) for c in still if c is not None}
    assert held.height > 0  # rows bad for other reasons are still held
    assert_accounted(lake)
    # again: nothing left to release, nothing written
    names = ["silver.transactions", "quarantine.transactions", ACCOUNTING]
    versions = {n: lake.version(n) for n in names}
    again = silver_mod.retry_quarantine(lake, transactions_spec(), processed_at=NOW)
    assert again.released_rows == 0
    assert {n: lake.version(n) for n in names} == versions


def test_a_retry_killed_between_commits_completes_on_rerun(
    tmp_path, monkeypatch
) -> None:
    """Silver got the released rows, then the process died before quarantine let
    them go: the next retry appends nothing twice and settles the accounting."""
    lake, expected = late_customer_lake(tmp_path)
    silver_before = lake.rows("silver.transactions")
    real = Lake.merge_matched

    def die_on_delete(self, name, data, **kw):
        if kw["action"] == "delete":
            raise KeyboardInterrupt("killed")
        return real(self, name, data, **kw)

    monkeypatch.setattr(Lake, "merge_matched", die_on_delete)
    with pytest.raises(KeyboardInterrupt):
        silver_mod.retry_quarantine(lake, transactions_spec(), processed_at=NOW)
    monkeypatch.undo()
    assert lake.rows("silver.transactions") == silver_before + expected
    result = silver_mod.retry_quarantine(lake, transactions_spec(), processed_at=NOW)
    assert result.released_rows == expected
    assert lake.rows("silver.transactions") == silver_before + expected
    assert_accounted(lake)


def _versioned_batches() -> list[Batch]:
    """Transactions with `updated_at`, then batches that update, repeat and
    send stale versions of rows from earlier batches (and of each other)."""
    sim = simulate(n_customers=40, n_terminals=80, n_days=6, seed=11)
    t0 = datetime(2026, 1, 1)
    days = list(split_by_day(sim.transactions))
    batches = [
        Batch("customers", "c", sim.customers),
        Batch("terminals", "t", sim.terminals),
    ]
    stamped = []
    for k, (day, rows) in enumerate(days):
        dated = rows.append_column(
            "updated_at", pa.array([t0.replace(day=1 + k)] * rows.num_rows)
        )
        stamped.append(dated)
        batches.append(Batch("transactions", day, dated))
    first, second = stamped[0], stamped[1]
    amounts = pc.add(first["TX_AMOUNT"], 1.0)
    newer = first.set_column(
        first.schema.get_field_index("TX_AMOUNT"), "TX_AMOUNT", amounts
    )
    newer = newer.set_column(
        newer.schema.get_field_index("updated_at"),
        "updated_at",
        pa.array([datetime(2026, 2, 1)] * newer.num_rows),
    )
    older = second.set_column(
        second.schema.get_field_index("updated_at"),
        "updated_at",
        pa.array([datetime(2025, 12, 1)] * second.num_rows),
    )
    batches += [
        # batches of one ingest are processed in batch id order: u1, u2, u3
        Batch("transactions", "u1-updates", newer.slice(0, 30)),  # newer: replace
        Batch("transactions", "u2-stale", older.slice(0, 20)),  # older: stale
        Batch("transactions", "u3-again", newer.slice(10, 30)),  # same version: dup
    ]
    return batches


def test_updates_stale_and_repeated_versions_do_not_depend_on_chunking(
    tmp_path, monkeypatch
) -> None:
    """Latest-wins keys seen across chunks (each batch its own chunk) give the
    silver, quarantine and accounting of a one-chunk build."""
    found = {}
    for name, chunk_rows in (("one", 10**9), ("many", 1)):
        monkeypatch.setattr(silver_mod, "CHUNK_ROWS", chunk_rows)
        lake = Lake(tmp_path / name)
        ingest(lake, _versioned_batches(), ingested_at=NOW)
        build_all(lake)
        silver = pl.from_arrow(lake.read("silver.transactions")).sort("transaction_id")
        rows = pl.from_arrow(lake.read(ACCOUNTING)).filter(
            pl.col("table") == "silver.transactions"
        )
        # accepted rows, replaced ones included: bronze = silver + quarantine
        assert (
            rows["bronze_rows"] == rows["silver_rows"] + rows["quarantined_rows"]
        ).all()
        assert rows["bronze_rows"].sum() == lake.rows("bronze.transactions")
        assert silver.height == rows["silver_rows"].sum() - rows["replaced_rows"].sum()
        held = pl.from_arrow(lake.read("quarantine.transactions"))
        counts = pl.from_arrow(lake.read(ACCOUNTING)).sort("table", "_batch_id")
        found[name] = (
            silver.select("transaction_id", "tx_amount", "updated_at"),
            held.select("TRANSACTION_ID", "_batch_id", "_check").sort(
                "_batch_id", "TRANSACTION_ID"
            ),
            counts.select("table", "_batch_id", "silver_rows", "replaced_rows"),
        )
    silver, held, counts = found["many"]
    for a, b in zip(found["one"], found["many"], strict=True):
        assert a.equals(b)
    checks = dict(held.group_by("_batch_id").agg(pl.col("_check").first()).iter_rows())
    assert checks == {"u2-stale": "stale_version", "u3-again": "duplicate_key"}
    assert held.height == 20 + 20  # all stale rows; the 20 repeats of updates
    assert counts.get_column("replaced_rows").sum() == 30
    assert silver.get_column("transaction_id").is_unique().all()
