"""Benchmark the prediction log's appends: `Lake.write` against `Lake.appender`.

Each run appends `--rows`-row tables (the stream consumer's micro-batch: 500)
`--commits` times in a row to a fresh Delta table, with schema merge, as the
stream consumer and the server's log flush do. Prints wall and CPU time per
commit (CPU includes delta-rs's own threads). `Lake.write` loads the table for
every commit and cleans expired log entries; the appender keeps one handle open
and leaves the cleanup to `aistack vacuum`.

`--growth N`: then N commits of 400 prediction-log rows (the fraud log's 32
columns, JSON text included, distinct values) through three appenders, each
on its own table: as shipped (background compaction every 100 commits,
files of 16 MiB and more left alone, statistics of `logged_at` and
`event_time` only), without compaction, and compacting to deltalake's
default target (100 MiB). Prints each one's wall time per commit over windows
of commits, the files at the end, the compactions (their wall time, on
their thread) and the process CPU of it all per commit.

    .venv/bin/python bench/log_appends.py
    .venv/bin/python bench/log_appends.py --commits 0 --growth 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from aistack.lake.delta import Appender, Lake
from aistack.serving.log import LOG_STATS, log_schema, log_table


def _rows(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "request_id": [str(i) for i in range(n)],
            "score": rng.random(n),
            "payload": ['{"tx_amount": 12.5}'] * n,
        }
    )


def _time(commit: Callable[[], None], commits: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(commits):
        commit()
    return (
        (time.perf_counter() - wall) / commits * 1e3,
        (time.process_time() - cpu) / commits * 1e3,
    )


FEATURES = [f"f{i}" for i in range(15)]


def _log_rows(n: int, first: int, rng: np.random.Generator) -> pa.Table:
    """`n` prediction-log rows as the server writes them (distinct values)."""
    now = datetime.now(UTC)
    values = rng.random((n, len(FEATURES))).round(6)
    records = []
    for i in range(n):
        features = dict(zip(FEATURES, values[i].tolist(), strict=True))
        payload = {"transaction_id": first + i, "tx_amount": float(values[i, 0])}
        records.append(
            {
                "request_id": str(first + i),
                "logged_at": now,
                "route": "stream:bench",
                "payload": json.dumps(payload),
                "features": json.dumps(features),
                "score": float(values[i, 1]),
                "decision": False,
                "answer": json.dumps({"score": float(values[i, 1])}),
                "model_name": "fraud",
                "model_version": 3,
                "online_versions": "{}",
                "unknown_entities": "",
                "arm": "champion",
                "event_id": str(first + i),
                "event_time": datetime(2018, 9, 1) + timedelta(seconds=first + i),
                "late": "",
                "stream_id": f"0/{first + i}-0",
                **{f"feature_{k}": v for k, v in features.items()},
            }
        )
    return log_table(records, log_schema(FEATURES))


def growth(commits: int, folder: Path) -> Table:
    """Commit CPU as the log grows, per appender kind (see the docstring)."""
    rng = np.random.default_rng(0)
    batches = [_log_rows(400, k * 400, rng) for k in range(50)]
    window = max(commits // 4, 1)
    table = Table(
        title=f"{commits} commits of 400 prediction-log rows: wall ms per commit, "
        "then the files at the end, the compactions, and the CPU of it all "
        "(commits and compactions) per commit"
    )
    table.add_column("appender")
    for start in range(0, commits, window):
        table.add_column(
            f"ms, {start + 1}-{min(start + window, commits)}", justify="right"
        )
    for column in ("files", "compactions", "their wall s", "CPU ms / commit"):
        table.add_column(column, justify="right")
    kinds = {
        "as shipped": lambda lake: lake.appender("ops.log", stats=LOG_STATS),
        "no compaction": lambda lake: Appender(
            lake, "ops.log", compact_every=0, stats=LOG_STATS
        ),
        "compaction to 100 MiB": lambda lake: Appender(
            lake, "ops.log", compact_target=None, stats=LOG_STATS
        ),
    }
    for name, make in kinds.items():
        lake = Lake(folder / name.replace(" ", "_"))
        log = make(lake)
        wall, row = [], [name]
        began = time.process_time()
        for k in range(commits):
            start = time.perf_counter()
            log.append(batches[k % len(batches)])
            wall.append(time.perf_counter() - start)
        log.wait()
        cpu = time.process_time() - began
        row += [
            f"{np.mean(wall[s : s + window]) * 1e3:.1f}"
            for s in range(0, commits, window)
        ]
        files = len(lake._table("ops.log").file_uris())
        row += [
            f"{files:,}",
            str(log.compactions),
            f"{log.compaction_seconds:.1f}",
            f"{cpu / commits * 1e3:.1f}",
        ]
        table.add_row(*row)
        assert lake.rows("ops.log") == 400 * commits
    return table


def main() -> None:
    """Both ways, each on its own fresh table, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--growth", type=int, default=0)
    args = parser.parse_args()
    if args.growth:
        with tempfile.TemporaryDirectory() as tmp:
            Console().print(growth(args.growth, Path(tmp)))
    if not args.commits:
        return
    data = _rows(args.rows)
    table = Table(title=f"{args.commits} appends of {args.rows} rows, in a row")
    for column in ("path", "wall ms / commit", "CPU ms / commit"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    with tempfile.TemporaryDirectory() as tmp:
        plain = Lake(Path(tmp) / "plain")
        kept = Lake(Path(tmp) / "kept")
        log = kept.appender("ops.log")

        def write() -> None:
            plain.write(
                "ops.log", data, mode="append", merge_schema=True, return_version=False
            )

        for name, commit in (
            ("Lake.write", write),
            ("Lake.appender", lambda: log.append(data)),
        ):
            wall, cpu = _time(commit, args.commits)
            table.add_row(name, f"{wall:.1f}", f"{cpu:.1f}")
        assert plain.rows("ops.log") == kept.rows("ops.log") == args.rows * args.commits
    Console().print(table)


if __name__ == "__main__":
    main()
