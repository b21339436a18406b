"""Scale benchmark: the fraud pipeline at 1x, 3x and 10x the default simulation,
on the embedded engine and on a 2-worker local Dask cluster, in one run.

Each (size, engine) runs in its own subprocess in a fresh temporary workspace, so
every peak is clean. Stages run one by one (`aistack.runner.run` with one stage):
ingest -> bronze, bronze -> silver, silver -> gold, train (point-in-time training
set, every trainer, gates, champion), batch scoring. Per stage: wall seconds and
peak RSS, sampled every 20 ms over the driver plus, on the cluster, the scheduler
and both worker processes (summed). A size multiplies customers and terminals
(the default: 5,000 and 10,000 over 183 days; 10x: 50,000 customers, ~18 M
transactions).

At 1x on the embedded engine the same child then times the handbook's pandas
feature code (`handbook_features`) on the silver transactions the gold stage read,
after every stage (its memory is in no stage's peak), and prints gold's speed-up
over it: pandas seconds / gold stage seconds (two views, Delta writes included;
pandas writes nothing).

    .venv/bin/python bench/scale.py                      # 1, 3 and 10x, both engines
    .venv/bin/python bench/scale.py --sizes 0.1 --engines duckdb dask   # quick
    .venv/bin/python bench/scale.py --sizes 1 --engines duckdb          # 1x + pandas
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

MIB = 2**20
STAGES = ("ingest", "silver", "gold", "train", "score")
DEFAULT = {"customers": 5000, "terminals": 10000, "days": 183}
TARGET_10X_S = 300.0
TARGET_10X_MIB = 8 * 1024.0
TARGET_1X_MIB = 1024.0
TARGET_GOLD_RATIO = 15.0


@dataclass
class Measured:
    """One stage of one (size, engine) run."""

    size: float
    engine: str
    stage: str
    seconds: float
    peak_mib: float
    rows: int


class PeakRss:
    """Peak of the summed RSS of some processes while the block runs."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        total = 0
        for proc in self.procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def measure(size: float, engine: str, tmp: Path) -> list[Measured]:
    """Run every stage at `size` on `engine` in a workspace under `tmp`."""
    from aistack.contract import get_use_case  # noqa: PLC0415
    from aistack.runner import run  # noqa: PLC0415
    from aistack.settings import Settings  # noqa: PLC0415
    from aistack.workspace import Workspace  # noqa: PLC0415

    uc = get_use_case("fraud")
    params = uc.params(
        customers=max(1, round(DEFAULT["customers"] * size)),
        terminals=max(1, round(DEFAULT["terminals"] * size)),
        days=DEFAULT["days"],
    )
    with _engine(engine, tmp) as (extra, pids):
        ws = Workspace(Settings(workspace=tmp / "ws", seed=42, **extra))
        found = []
        for stage in STAGES:
            if stage == "score" and ws.registry.version_of(uc.name, "champion") is None:
                continue  # every candidate failed its gates (tiny sizes): no scoring
            with PeakRss(pids) as peak:
                start = time.perf_counter()
                report = run(uc, ws, params, stages=(stage,))
                seconds = time.perf_counter() - start
            rows = {
                "ingest": sum(
                    (report.ingest.new_rows if report.ingest else {}).values()
                ),
                "silver": sum(r.bronze_rows for r in report.silver),
                "gold": sum(g.new_rows for g in report.gold),
                "train": 0,
                "score": report.scoring.rows if report.scoring else 0,
            }[stage]
            found.append(Measured(size, engine, stage, seconds, peak.peak / MIB, rows))
        close = getattr(ws.engine, "close", None)
        if close is not None:
            close()
    return found


def handbook_seconds(tmp: Path) -> float:
    """Wall seconds of the handbook's pandas features over the workspace's silver
    transactions (the rows the gold stage read), with the handbook's names."""
    from aistack.lake.delta import Lake  # noqa: PLC0415
    from aistack.usecases.fraud.handbook import handbook_features  # noqa: PLC0415

    names = ("transaction_id", "tx_datetime", "customer_id", "terminal_id")
    columns = [*names, "tx_amount", "tx_fraud"]
    lake = Lake(tmp / "ws" / "tables")
    frame = lake.read("silver.transactions", columns=columns).to_pandas()
    frame.columns = [c.upper() for c in frame.columns]
    start = time.perf_counter()
    features = handbook_features(frame)
    seconds = time.perf_counter() - start
    assert len(features) == len(frame)
    return seconds


@contextmanager
def _engine(engine: str, tmp: Path) -> Iterator[tuple[dict[str, object], list[int]]]:
    me = psutil.Process().pid
    if engine == "duckdb":
        yield {}, [me]
        return
    from aistack.engine.local import local_cluster  # noqa: PLC0415

    with local_cluster(tmp, memory_limit="0") as cluster:
        extra = {"engine": "dask", "scheduler_address": cluster.address}
        yield extra, [me, *cluster.pids]


def child(size: float, engine: str, *, pandas: bool) -> None:
    """One (size, engine) run; prints its measurements (and, with `pandas`, the
    handbook's pandas feature seconds) as JSON."""
    with tempfile.TemporaryDirectory(prefix="aistack-scale-") as tmp:
        found = measure(size, engine, Path(tmp))
        handbook = handbook_seconds(Path(tmp)) if pandas else None
    print(json.dumps({"stages": [asdict(m) for m in found], "pandas_s": handbook}))


def main(argv: list[str] | None = None) -> int:
    """Every (size, engine) in a subprocess, then one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument(
        "--engines", nargs="+", choices=["duckdb", "dask"], default=["duckdb", "dask"]
    )
    parser.add_argument(
        "--no-pandas",
        action="store_true",
        help="skip the handbook's pandas features at 1x on the embedded engine",
    )
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "ENGINE"))
    args = parser.parse_args(argv)
    if args.child:
        size, engine = float(args.child[0]), args.child[1]
        child(size, engine, pandas=_with_pandas(size, engine, args.no_pandas))
        return 0
    console = Console()
    console.print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the start")
    results: list[Measured] = []
    pandas_s: float | None = None
    for size in args.sizes:
        for engine in args.engines:
            console.print(f"[bold]{size:g}x on {engine}[/] ...")
            command = [sys.executable, __file__, "--child", str(size), engine]
            if args.no_pandas:
                command.append("--no-pandas")
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                console.print(f"[red]{size:g}x on {engine} failed:[/]\n{done.stderr}")
                return 1
            last = json.loads(done.stdout.strip().splitlines()[-1])
            results.extend(Measured(**m) for m in last["stages"])
            pandas_s = last["pandas_s"] if last["pandas_s"] is not None else pandas_s
    table = Table(title="fraud pipeline by size and engine (2 workers on the cluster)")
    for column in ("size", "engine", "stage", "rows", "seconds", "peak MiB"):
        table.add_column(column, justify="right")
    for m in results:
        table.add_row(
            f"{m.size:g}x",
            m.engine,
            m.stage,
            f"{m.rows:,}",
            f"{m.seconds:.1f}",
            f"{m.peak_mib:,.0f}",
        )
    for size in args.sizes:
        for engine in args.engines:
            ran = [m for m in results if m.size == size and m.engine == engine]
            total = sum(m.seconds for m in ran)
            peak = max(m.peak_mib for m in ran)
            table.add_row(
                f"{size:g}x",
                engine,
                "[bold]end to end",
                "",
                f"{total:.1f}",
                f"{peak:,.0f}",
            )
    console.print(table)
    console.print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the end")
    one = [m for m in results if m.size == 1.0 and m.engine == "duckdb"]
    if one:
        peak = max(m.peak_mib for m in one)
        console.print(
            f"1x embedded: peak {peak:,.0f} MiB (target {TARGET_1X_MIB:,.0f}): "
            + ("PASS" if peak <= TARGET_1X_MIB else "FAIL")
        )
    gold = next((m for m in one if m.stage == "gold"), None)
    if gold is not None and pandas_s is not None:
        ratio = pandas_s / gold.seconds
        console.print(
            f"1x gold vs the handbook's pandas features on the same silver rows, "
            f"this run: {pandas_s:.1f} s / {gold.seconds:.1f} s = {ratio:.1f}x "
            f"(target {TARGET_GOLD_RATIO:.0f}x): "
            + ("PASS" if ratio >= TARGET_GOLD_RATIO else "FAIL")
        )
    ten = [m for m in results if m.size == 10.0 and m.engine == "duckdb"]
    if ten:
        total, peak = sum(m.seconds for m in ten), max(m.peak_mib for m in ten)
        verdict = total <= TARGET_10X_S and peak <= TARGET_10X_MIB
        console.print(
            f"10x embedded: {total:.0f} s (target {TARGET_10X_S:.0f}), peak "
            f"{peak:,.0f} MiB (target {TARGET_10X_MIB:,.0f}): "
            + ("PASS" if verdict else "FAIL")
        )
    return 0


def _with_pandas(size: float, engine: str, skip: bool) -> bool:
    return size == 1.0 and engine == "duckdb" and not skip


if __name__ == "__main__":
    sys.exit(main())
