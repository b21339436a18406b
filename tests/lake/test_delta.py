"""Delta storage: versions, commit lineage, and atomic writes under a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from aistack.errors import ConfigError, TableNotFoundError
from aistack.lake.delta import Appender, Lake, compact, rewrite_lock
from aistack.locks import file_lock


def test_write_read_versions_and_inputs(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.version("silver.things") is None
    v0 = lake.write(
        "silver.things", pa.table({"a": [1, 2]}), mode="append", inputs={"bronze.x": 3}
    )
    v1 = lake.write("silver.things", pa.table({"a": [3]}), mode="append")
    assert (v0, v1) == (0, 1)
    assert lake.rows("silver.things") == 3
    assert lake.read("silver.things", version=0).column("a").to_pylist() == [1, 2]
    assert lake.last_inputs("silver.things") == {}
    assert lake.distinct("silver.things", "a") == {1, 2, 3}
    assert (
        tmp_path / "silver" / "things" / "_delta_log" / "00000000000000000001.json"
    ).exists()
    con = lake.connect({"silver.things": 0})
    assert con.execute("SELECT sum(a) FROM silver.things").fetchall() == [(3,)]
    assert [t.name for t in lake.tables()] == ["silver.things"]


def test_bad_names_and_missing_tables(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(ConfigError, match=r"layer\.name"):
        lake.path("NoLayer")
    with pytest.raises(TableNotFoundError, match=r"silver\.absent"):
        lake.read("silver.absent")


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pyarrow as pa
    from pathlib import Path
    from aistack.lake.delta import Lake
    lake = Lake(Path(sys.argv[1]))
    n = 4_000_000
    big = pa.table({"a": np.arange(n), "b": np.random.default_rng(0).random(n)})
    print("writing", flush=True)
    for _ in range(50):
        lake.write("silver.big", big, mode="append")
    """
)


def test_killed_writer_leaves_previous_version(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write("silver.big", pa.table({"a": [1], "b": [0.5]}), mode="append")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)  # inside the first multi-file write of 4 M rows
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # every version is whole: either the one-row table or whole appends of 4 M rows
    version = lake.version("silver.big")
    assert version is not None
    assert (lake.rows("silver.big") - 1) % 4_000_000 == 0
    assert lake.read("silver.big", version=0).num_rows == 1
    # and the table takes new writes afterwards
    assert (
        lake.write("silver.big", pa.table({"a": [2], "b": [1.0]}), mode="append")
        == version + 1
    )


def test_files_written_apart_are_invisible_until_one_commit_records_them(
    tmp_path: Path,
) -> None:
    lake = Lake(tmp_path)
    when = datetime(2024, 1, 1, 12, 30, 0, 123456, tzinfo=UTC)
    parts = [
        pa.table(
            {
                "id": pa.array([i, i + 10], pa.int64()),
                "x": pa.array([0.5 * i, None]),
                "_written_at": pa.array([when] * 2, pa.timestamp("us", tz="UTC")),
            }
        )
        for i in range(3)
    ]
    assert lake.write_file("gold.t", parts[0].slice(0, 0)) is None  # empty: no file
    files = [lake.write_file("gold.t", p) for p in parts]
    assert not lake.exists("gold.t")  # written, not committed: no table yet
    version = lake.commit_files(
        "gold.t", [f for f in files if f], schema=parts[0].schema, inputs={"a": 1}
    )
    assert version == 0
    assert lake.read("gold.t").sort_by("id") == pa.concat_tables(parts).sort_by("id")
    assert lake.rows("gold.t") == 6  # from the recorded statistics
    assert lake.column_range("gold.t", "_written_at") == (when, when)
    assert lake.last_inputs("gold.t") == {"a": 1}
    stray = lake.write_file("gold.t", parts[0])  # a task whose commit never came
    assert stray is not None and lake.read("gold.t").num_rows == 6
    assert lake.commit_files("gold.t", [], schema=parts[0].schema, inputs={"a": 2}) == 1
    assert lake.read("gold.t").num_rows == 6 and lake.last_inputs("gold.t") == {"a": 2}


def test_appenders_kept_open_keep_every_row_of_concurrent_writers(
    tmp_path: Path,
) -> None:
    """Two appenders (as two stream consumers) and a plain write interleave on
    one table: every row lands once, in its own commit, new columns merged."""
    lake = Lake(tmp_path)
    a, b = lake.appender("ops.log"), lake.appender("ops.log")
    a.append(pa.table({"x": [0]}))  # creates the table
    for i in range(1, 30, 3):
        a.append(pa.table({"x": [i]}))
        b.append(pa.table({"x": [i + 1]}))
        lake.write("ops.log", pa.table({"x": [i + 2]}), mode="append")
    b.append(pa.table({"x": [100], "y": ["new column"]}))
    a.append(pa.table({"x": [101]}))  # its handle predates the new column
    table = lake.read("ops.log")
    assert sorted(table.column("x").to_pylist()) == [*range(31), 100, 101]
    assert lake.version("ops.log") == 32
    assert table.filter(pa.compute.field("x") == 100).column("y").to_pylist() == [
        "new column"
    ]
    assert lake.vacuum("ops.log", retention_hours=0) == 0  # nothing to remove


def test_appenders_compact_the_table_in_the_background(tmp_path: Path) -> None:
    """Every append adds a file and a Delta commit costs more the more files a
    table holds: two appenders of one table (as two stream consumers) compact
    it every 10 of their appends, in the background; every row stays, once."""
    from deltalake import DeltaTable  # noqa: PLC0415

    lake = Lake(tmp_path)
    a = Appender(lake, "ops.log", compact_every=10)
    b = Appender(lake, "ops.log", compact_every=10)
    for i in range(80):
        (a if i % 2 else b).append(pa.table({"x": [i]}))
        if i % 20 == 19:  # let the compaction started meanwhile finish
            a.wait()
            b.wait()
    a.wait()
    b.wait()
    assert a.compactions + b.compactions >= 4
    assert sorted(lake.read("ops.log").column("x").to_pylist()) == list(range(80))
    files = len(DeltaTable(str(lake.path("ops.log"))).file_uris())
    assert files <= 25, f"{files} files after 80 appends"
    history = DeltaTable(str(lake.path("ops.log"))).history()
    assert {h["operation"] for h in history} == {"WRITE", "OPTIMIZE"}


def test_deletes_and_compactions_of_a_table_take_turns(tmp_path: Path) -> None:
    """deltalake commits a compaction and a delete of the same files both (the
    compaction could bring erased rows back): while one rewrite of a table
    holds its lock, a delete waits and an appender's compaction is skipped."""
    lake = Lake(tmp_path)
    lake.write("ops.log", pa.table({"x": [1, 2, 3]}), mode="append")
    lake.write("ops.log", pa.table({"x": [4]}), mode="append")
    done = threading.Event()
    with file_lock(rewrite_lock(lake, "ops.log")):  # as a compaction holds it
        assert compact(lake, "ops.log", wait=False) is None
        deleting = threading.Thread(
            target=lambda: (lake.delete("ops.log", "x = 2"), done.set())
        )
        deleting.start()
        assert not done.wait(0.5)
    assert done.wait(30)
    deleting.join()
    assert compact(lake, "ops.log", wait=False) is not None
    assert sorted(lake.read("ops.log").column("x").to_pylist()) == [1, 3, 4]


def test_an_appender_records_statistics_of_the_columns_it_names_only(
    tmp_path: Path,
) -> None:
    """Per-file statistics cost most of a small commit's CPU: an appender with
    `stats` records them for those columns only, on a table it creates and on
    one created before (its properties set once)."""
    from deltalake import DeltaTable  # noqa: PLC0415

    lake = Lake(tmp_path)
    rows = pa.table({"t": [1, 2], "text": ["a", "b"], "x": [0.5, 1.5]})
    lake.write("ops.old", rows, mode="append")  # without the property
    for name in ("ops.new", "ops.old"):
        log = lake.appender(name, stats=["t"])
        log.append(rows)
        log.append(rows)
        table = DeltaTable(str(lake.path(name)))
        assert table.metadata().configuration["delta.dataSkippingStatsColumns"] == "t"
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        newest = max(actions, key=lambda a: a["modification_time"])
        assert newest["min.t"] == 1 and newest["max.t"] == 2
        assert [v for k, v in newest.items() if k.endswith((".text", ".x"))] in (
            [],
            [None] * 6,  # columns of the files written before the property
        )
        assert lake.read(name).num_rows == 4 + (name == "ops.old") * 2


def test_an_appender_after_a_failed_append_reopens_the_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    log = lake.appender("ops.log")
    log.append(pa.table({"x": [1]}))
    with pytest.raises(Exception, match=r"(?i)schema|cast|type"):
        log.append(pa.table({"x": ["not an int"]}))
    log.append(pa.table({"x": [2]}))
    assert sorted(lake.read("ops.log").column("x").to_pylist()) == [1, 2]


def test_vacuum_removes_log_entries_past_the_log_retention(tmp_path: Path) -> None:
    """Appends skip Delta's expired-log cleanup; `vacuum` does it (here with a
    log retention of 0, so every entry before the last checkpoint expires)."""
    from deltalake import DeltaTable, write_deltalake  # noqa: PLC0415

    lake = Lake(tmp_path)
    write_deltalake(
        str(lake.path("ops.log")),
        pa.table({"x": [0]}),
        configuration={"delta.logRetentionDuration": "interval 0 seconds"},
    )
    log = lake.appender("ops.log")
    for i in range(1, 6):
        log.append(pa.table({"x": [i]}))
    commits = sorted((lake.path("ops.log") / "_delta_log").glob("*.json"))
    assert len(commits) == 6  # every append kept its entry
    DeltaTable(str(lake.path("ops.log"))).create_checkpoint()
    lake.vacuum("ops.log", retention_hours=0)
    left = sorted((lake.path("ops.log") / "_delta_log").glob("*.json"))
    assert len(left) < len(commits)
    assert sorted(lake.read("ops.log").column("x").to_pylist()) == list(range(6))
