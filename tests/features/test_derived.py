"""Gold tables derived whole from silver: lineage, idempotence, key checks."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from aistack.contract import GoldTable
from aistack.errors import ConfigError, DeclarationError, SchemaError
from aistack.features.derived import (
    TRANSFORM_KEY,
    build_derived,
    transform_fingerprint,
)
from aistack.lake.delta import Lake


def per_user(ratings: pl.DataFrame) -> pl.DataFrame:
    return ratings.group_by("user").agg(pl.len().alias("n")).sort("user")


GOLD = GoldTable("counts", per_user, {"ratings": "silver.ratings"}, ("user",))


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    rows = pa.table({"user": [1, 1, 2], "item": [10, 11, 10]})
    lake.write("silver.ratings", rows, mode="append")
    return lake


def test_a_build_writes_the_transform_with_its_lineage(lake: Lake) -> None:
    built = build_derived(lake, GOLD, table="gold.uc_counts")
    assert not built.skipped and built.new_rows == 2 and built.version == 0
    assert lake.read("gold.uc_counts").to_pylist() == [
        {"user": 1, "n": 2},
        {"user": 2, "n": 1},
    ]
    assert lake.last_inputs("gold.uc_counts") == {
        "silver.ratings": 0,
        TRANSFORM_KEY: transform_fingerprint(per_user),
    }


def test_a_rebuild_on_the_same_inputs_writes_nothing(lake: Lake) -> None:
    build_derived(lake, GOLD, table="gold.uc_counts")
    again = build_derived(lake, GOLD, table="gold.uc_counts")
    assert again.skipped and again.new_rows == 0
    assert lake.version("gold.uc_counts") == 0
    log = sorted((lake.path("gold.uc_counts") / "_delta_log").glob("*.json"))
    assert len(log) == 1


def test_a_new_silver_version_rebuilds_the_whole_table(lake: Lake) -> None:
    build_derived(lake, GOLD, table="gold.uc_counts")
    lake.write("silver.ratings", pa.table({"user": [3], "item": [12]}), mode="append")
    built = build_derived(lake, GOLD, table="gold.uc_counts")
    assert built.version == 1 and built.new_rows == 3
    assert lake.rows("gold.uc_counts") == 3
    assert lake.last_inputs("gold.uc_counts") == {
        "silver.ratings": 1,
        TRANSFORM_KEY: transform_fingerprint(per_user),
    }
    first = lake.read("gold.uc_counts", version=0).num_rows
    assert first == 2  # the earlier build stays readable (time travel)
    commit = json.loads(
        (lake.path("gold.uc_counts") / "_delta_log" / f"{1:020d}.json")
        .read_text()
        .splitlines()[0]
    )
    assert "silver.ratings" in json.dumps(commit)


def per_item(ratings: pl.DataFrame) -> pl.DataFrame:
    return ratings.group_by("user").agg(pl.col("item").n_unique()).sort("user")


def test_a_changed_transform_rebuilds_on_the_same_inputs(lake: Lake) -> None:
    """Same silver versions, other code (a table's columns may have changed):
    the table is rebuilt, then a re-run writes nothing again."""
    build_derived(lake, GOLD, table="gold.uc_counts")
    changed = GoldTable("counts", per_item, GOLD.inputs, ("user",))
    built = build_derived(lake, changed, table="gold.uc_counts")
    assert not built.skipped and built.version == 1
    assert lake.read("gold.uc_counts").column_names == ["user", "item"]
    assert build_derived(lake, changed, table="gold.uc_counts").skipped
    assert transform_fingerprint(per_item) != transform_fingerprint(per_user)


def test_a_repeated_key_and_a_missing_input_are_named(lake: Lake) -> None:
    repeats = GoldTable(
        "raw", lambda ratings: ratings, {"ratings": "silver.ratings"}, ("user",)
    )
    with pytest.raises(SchemaError, match=r"gold.uc_raw: key \{'user': 1\} repeats"):
        build_derived(lake, repeats, table="gold.uc_raw")
    assert not lake.exists("gold.uc_raw")
    absent = GoldTable("x", per_user, {"ratings": "silver.clicks"})
    with pytest.raises(ConfigError, match=r"input silver\.clicks does not exist"):
        build_derived(lake, absent, table="gold.uc_x")


def test_a_gold_declaration_checks_its_inputs() -> None:
    with pytest.raises(DeclarationError, match="expected a silver table"):
        GoldTable("x", per_user, {"ratings": "gold.other"})
    with pytest.raises(DeclarationError, match="declare its inputs"):
        GoldTable("x", per_user, {})
