"""Benchmark the prediction log's appends: `Lake.write` against `Lake.appender`.

Each run appends `--rows`-row tables (the stream consumer's micro-batch: 500)
`--commits` times in a row to a fresh Delta table, with schema merge, as the
stream consumer and the server's log flush do. Prints wall and CPU time per
commit (CPU includes delta-rs's own threads). `Lake.write` loads the table for
every commit and cleans expired log entries; the appender keeps one handle open
and leaves the cleanup to `aistack vacuum`.

    .venv/bin/python bench/log_appends.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from aistack.lake.delta import Lake


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


def main() -> None:
    """Both ways, each on its own fresh table, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--commits", type=int, default=300)
    args = parser.parse_args()
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
