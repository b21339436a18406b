"""Benchmark: point-in-time training set, ours against Feast's file offline store.

Builds the default-size fraud simulation once (or reuses `--workspace`), draws
10k / 100k / 1M label rows from silver.transactions (fixed seed, sorted by time)
and, for each size, runs `aistack.features.gold.point_in_time_join` against
the customer and terminal gold views in a fresh process (clean peak RSS). Then it
exports the gold views and the label rows to Parquet and runs Feast's
`get_historical_features` (file offline store) on the same views, in a separate
virtual environment `bench/.venvs/feast` used only by this bench, for the sizes
it can finish within a time and a memory limit. It prints seconds, peak memory
and whether both return the same rows and values.

Target: 1M label rows in <= 2 s and <= 1.5 GB on 2 cores.

    .venv/bin/python bench/training_set.py [--sizes 10000,100000,1000000]
        [--feast-timeout 120] [--memory-limit-gb 8] [--skip-feast]
        [--workspace DIR] [--cores 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from aistack.contract import get_use_case
from aistack.features.gold import EVENT_TIME, WRITTEN_AT, point_in_time_join
from aistack.lake.delta import Lake
from aistack.settings import load_settings

BENCH_DIR = Path(__file__).resolve().parent
FEAST_VENV = BENCH_DIR / ".venvs" / "feast"
FEAST_WORKER = BENCH_DIR / "_feast_worker.py"
FEAST_VERSION = "0.67.0"
USE_CASE = "fraud"
SEED = 42
TARGET_ROWS = 1_000_000
TARGET_SECONDS = 2.0
TARGET_MB = 1536.0
TOLERANCE = 1e-9
JOIN_REPEATS = 3
JOIN_TIMEOUT = 600.0

console = Console(width=130)


# --------------------------------------------------------------------------- child


def _peak_mb() -> float:
    """Peak resident memory of this process since it started (VmHWM), in MiB.

    Not `getrusage().ru_maxrss`: Linux carries that over from the parent across
    fork + exec, so a child started by a big parent reports the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def join_child(workspace: Path, spine_path: Path, out: Path, as_of: str) -> int:
    """Run our point-in-time join in this (fresh) process and report it as JSON.

    The first call is the figure that counts (a training run calls it once per
    process); the next calls show the warm time.
    """
    use_case = get_use_case(USE_CASE)
    lake = Lake(load_settings(workspace=workspace).tables_dir)
    spine = pq.read_table(spine_path)
    when = datetime.fromisoformat(as_of)
    before = _peak_mb()
    seconds = []
    start = time.perf_counter()
    result = point_in_time_join(lake, use_case, spine, as_of=when)
    seconds.append(time.perf_counter() - start)
    peak = _peak_mb()
    for _ in range(JOIN_REPEATS - 1):
        del result
        start = time.perf_counter()
        result = point_in_time_join(lake, use_case, spine, as_of=when)
        seconds.append(time.perf_counter() - start)
    pq.write_table(result, out)
    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()
    report = {
        "seconds": seconds[0],
        "warm_seconds": min(seconds[1:], default=seconds[0]),
        "rss_before_mb": before,
        "peak_mb": peak,
        "rows_in": spine.num_rows,
        "rows_out": result.num_rows,
        "duckdb_threads": threads[0] if threads else None,
    }
    print(json.dumps(report))
    return 0


# ------------------------------------------------------------------ limited runner


@dataclass
class ChildRun:
    """How a monitored child process ended."""

    status: str  # ok | timeout | out of memory | failed
    seconds: float
    polled_peak_mb: float
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def run_limited(
    cmd: list[str], *, timeout: float, memory_mb: float, logs: Path
) -> ChildRun:
    """Run `cmd`, killing its process group past `timeout` s or `memory_mb` RSS.

    The child's last stdout line is its JSON report.
    """
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
        watched = psutil.Process(proc.pid)
        peak, status = 0.0, ""
        while proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                peak = max(peak, _tree_rss_mb(watched))
            if time.perf_counter() - start > timeout:
                status = "timeout"
            elif peak > memory_mb:
                status = "out of memory"
            if status:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    stdout = out_path.read_text().strip().splitlines()
    if status:
        return ChildRun(status, seconds, peak)
    if proc.returncode != 0 or not stdout:
        tail = "\n".join(err_path.read_text().strip().splitlines()[-15:])
        return ChildRun("failed", seconds, peak, error=tail)
    return ChildRun("ok", seconds, peak, report=json.loads(stdout[-1]))


# ------------------------------------------------------------------------- inputs


def ensure_gold(workspace: Path) -> None:
    """Build ingest -> silver -> gold of the default simulation unless present."""
    # Lazy: the join child should not pay for MLflow's import.
    from aistack.runner import run  # noqa: PLC0415
    from aistack.workspace import Workspace  # noqa: PLC0415

    use_case = get_use_case(USE_CASE)
    ws = Workspace(load_settings(workspace=workspace))
    tables = [use_case.labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    if all(ws.lake.exists(t) for t in tables):
        console.print(f"reusing gold tables in {workspace}")
        return
    start = time.perf_counter()
    report = run(use_case, ws, use_case.params(), stages=["ingest", "silver", "gold"])
    console.print(
        f"built the default simulation in {time.perf_counter() - start:.1f} s "
        f"({report.seconds})"
    )


def label_rows(workspace: Path, sizes: list[int], folder: Path) -> dict[int, Path]:
    """Sample each size of label rows (fixed seed), sort by time, write Parquet."""
    use_case = get_use_case(USE_CASE)
    labels = use_case.labels
    lake = Lake(load_settings(workspace=workspace).tables_dir)
    columns = [labels.id, labels.timestamp, *labels.columns, labels.label]
    source = lake.read(labels.table, columns=columns)
    console.print(f"{labels.table}: {source.num_rows:,} label rows to sample from")
    paths = {}
    for size in sizes:
        rng = np.random.default_rng(SEED)
        n = min(size, source.num_rows)
        picked = np.sort(rng.choice(source.num_rows, n, replace=False))
        spine = source.take(picked).sort_by(
            [(labels.timestamp, "ascending"), (labels.id, "ascending")]
        )
        paths[size] = folder / f"labels_{size}.parquet"
        pq.write_table(spine, paths[size])
    return paths


def export_gold(workspace: Path, folder: Path) -> tuple[Path, str]:
    """Gold views as Parquet for Feast, plus the spec; returns it and `as_of`.

    `as_of` is the latest `_written_at`: every written row is visible to both.
    """
    use_case = get_use_case(USE_CASE)
    lake = Lake(load_settings(workspace=workspace).tables_dir)
    views, latest = [], []
    for view in use_case.views:
        table = lake.read(
            use_case.gold_table(view),
            columns=[view.entity, EVENT_TIME, *view.feature_names, WRITTEN_AT],
        )
        latest.append(pc.max(table.column(WRITTEN_AT)).as_py())
        utc = pa.timestamp("us", tz="UTC")
        table = table.set_column(
            1, EVENT_TIME, table.column(EVENT_TIME).cast(utc)
        ).set_column(
            table.num_columns - 1, WRITTEN_AT, table.column(WRITTEN_AT).cast(utc)
        )
        path = folder / f"{view.name}.parquet"
        pq.write_table(table, path)
        views.append(
            {
                "name": view.name,
                "entity": view.entity,
                "ttl_seconds": view.ttl.total_seconds(),
                "path": str(path),
                "event_time": EVENT_TIME,
                "created": WRITTEN_AT,
                "features": [
                    {
                        "name": f,
                        "dtype": "int64"
                        if pa.types.is_integer(table.schema.field(f).type)
                        else "float64",
                    }
                    for f in view.feature_names
                ],
            }
        )
    spec = {
        "views": views,
        "timestamp": use_case.labels.timestamp,
        "id": use_case.labels.id,
    }
    spec_path = folder / "feast_spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    return spec_path, max(latest).isoformat()


# --------------------------------------------------------------------------- feast


def feast_python(version: str) -> Path | None:
    """Interpreter of the bench's Feast venv, created on first use; None if failed."""
    python = FEAST_VENV / "bin" / "python"
    check = [str(python), "-c", "import feast; print(feast.__version__)"]
    start = time.perf_counter()
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip() == version:
            console.print(
                f"Feast venv: reusing {FEAST_VENV} (feast {version}, checked in "
                f"{time.perf_counter() - start:.1f} s)"
            )
            return python
    console.print(f"Feast venv: creating {FEAST_VENV} with feast=={version} ...")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(FEAST_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", f"feast=={version}"],
        check,
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            console.print(
                f"[bold red]Feast venv setup FAILED[/] at `{' '.join(step[:4])}` "
                f"after {time.perf_counter() - start:.1f} s:\n{tail}\n"
                "Reporting our own figures only."
            )
            return None
    console.print(f"Feast venv: set up in {time.perf_counter() - start:.1f} s")
    return python


# ------------------------------------------------------------------------ compare


@dataclass
class Comparison:
    """Ours against Feast on one size."""

    rows_ours: int
    rows_feast: int
    common: int
    dropped: int  # label rows in ours that Feast did not return
    dropped_stale: int  # ... of which some view had no value inside the ttl
    dropped_same_key: int  # ... of which share (entity, timestamp) with another
    extra: int  # rows Feast returned that are not label rows (or repeated ids)
    stale: int  # label rows where some view has no value inside its ttl (ours)
    same_key: int  # label rows sharing (entity, timestamp) with another, any view
    mismatched_rows: int
    mismatches: dict[str, int]


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def compare(ours_path: Path, feast_path: Path) -> Comparison:
    """Same label rows? Same feature values (NULL = NULL, tolerance 1e-9)?"""
    use_case = get_use_case(USE_CASE)
    labels = use_case.labels
    ours = pq.read_table(ours_path)
    feast = pq.read_table(feast_path)
    ids_ours = ours.column(labels.id).to_numpy()
    ids_feast = feast.column(labels.id).to_numpy()
    _, at_ours, at_feast = np.intersect1d(ids_ours, ids_feast, return_indices=True)
    dropped = ~np.isin(ids_ours, ids_feast)
    stale = np.zeros(ours.num_rows, dtype=bool)
    same_key = np.zeros(ours.num_rows, dtype=bool)
    ts = ours.column(labels.timestamp).cast(pa.int64()).to_numpy()
    for view in use_case.views:
        flag = ours.column(f"_missing_{view.name}").to_numpy(zero_copy_only=False)
        stale |= flag.astype(bool)
        keys = np.stack([ours.column(view.entity).to_numpy(), ts], axis=1)
        _, inverse, counts = np.unique(
            keys, axis=0, return_inverse=True, return_counts=True
        )
        same_key |= counts[inverse.ravel()] > 1
    bad = np.zeros(len(at_ours), dtype=bool)
    mismatches = {}
    for name in [f for v in use_case.views for f in v.feature_names]:
        a = _floats(ours.column(name))[at_ours]
        b = _floats(feast.column(name))[at_feast]
        equal = (np.isnan(a) & np.isnan(b)) | np.isclose(
            a, b, rtol=TOLERANCE, atol=TOLERANCE
        )
        mismatches[name] = int((~equal).sum())
        bad |= ~equal
    return Comparison(
        rows_ours=ours.num_rows,
        rows_feast=feast.num_rows,
        common=len(at_ours),
        dropped=int(dropped.sum()),
        dropped_stale=int((dropped & stale).sum()),
        dropped_same_key=int((dropped & same_key).sum()),
        extra=feast.num_rows - len(at_feast),
        stale=int(stale.sum()),
        same_key=int(same_key.sum()),
        mismatched_rows=int(bad.sum()),
        mismatches=mismatches,
    )


# --------------------------------------------------------------------------- main


def _mb(run: ChildRun, limit_mb: float) -> str:
    if run.status == "out of memory":
        return f"> {limit_mb:,.0f}"
    if run.ok:
        return f"{run.report['peak_mb']:,.0f}"
    return f"{run.polled_peak_mb:,.0f}*"


def _secs(run: ChildRun, key: str = "seconds") -> str:
    if run.ok:
        return f"{run.report[key]:.2f}"
    if run.status == "timeout":
        return f"> {run.seconds:.0f}"
    return "-"


def _parse_sizes(text: str) -> list[int]:
    return sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})


def _limit_cores(cores: int) -> str:
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:cores]
    os.sched_setaffinity(0, chosen)  # inherited by every child process
    return f"{len(chosen)} of {os.cpu_count()} cores (CPU affinity {chosen})"


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0912, PLR0915
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--feast-timeout", type=float, default=120.0)
    parser.add_argument("--memory-limit-gb", type=float, default=8.0)
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--feast-version", default=FEAST_VERSION)
    args = parser.parse_args(argv)
    sizes = _parse_sizes(args.sizes)
    limit_mb = args.memory_limit_gb * 1024

    console.rule("[bold]point-in-time training set: aistack vs Feast")
    console.print(
        f"{_limit_cores(args.cores)}; {psutil.virtual_memory().total / 2**30:.1f} GB "
        f"RAM; sizes {sizes}; Feast limits {args.feast_timeout:.0f} s and "
        f"{args.memory_limit_gb:g} GB per size; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="aistack-bench-") as tmp:
        folder = Path(tmp)
        workspace = (args.workspace or folder / "workspace").resolve()
        ensure_gold(workspace)
        spines = label_rows(workspace, sizes, folder)
        spec_path, as_of = export_gold(workspace, folder)
        console.print(f"as_of = {as_of} (latest _written_at of the gold views)")

        ours: dict[int, ChildRun] = {}
        for size in sizes:
            out = folder / f"ours_{size}.parquet"
            cmd = [sys.executable, __file__, "_join", str(workspace)]
            cmd += [str(spines[size]), str(out), as_of]
            ours[size] = run_limited(
                cmd,
                timeout=JOIN_TIMEOUT,
                memory_mb=limit_mb,
                logs=folder / f"ours_{size}",
            )
            run = ours[size]
            console.print(
                f"ours  {size:>9,}: {run.status}, first call {_secs(run)} s, "
                f"warm {_secs(run, 'warm_seconds')} s, peak {_mb(run, limit_mb)} MB"
                + (
                    f" (before the join {run.report['rss_before_mb']:,.0f} MB, "
                    f"DuckDB threads {run.report['duckdb_threads']})"
                    if run.ok
                    else f"\n{run.error}"
                )
            )

        feast: dict[int, ChildRun] = {}
        compared: dict[int, Comparison] = {}
        python = None if args.skip_feast else feast_python(args.feast_version)
        if python is not None:
            for size in sizes:
                if feast and not feast[max(feast)].ok:
                    break  # a smaller size did not finish: a larger one won't
                out = folder / f"feast_{size}.parquet"
                cmd = [str(python), str(FEAST_WORKER), str(spec_path)]
                cmd += [str(spines[size]), str(out)]
                run = run_limited(
                    cmd,
                    timeout=args.feast_timeout,
                    memory_mb=limit_mb,
                    logs=folder / f"feast_{size}",
                )
                feast[size] = run
                extra = ""
                if run.ok:
                    extra = (
                        f" (import {run.report['import_seconds']:.1f} s, "
                        f"registry apply {run.report['apply_seconds']:.1f} s)"
                    )
                elif run.status == "failed":
                    extra = f"\n{run.error}"
                secs = _secs(run) if run.ok else f"stopped after {run.seconds:.0f}"
                console.print(
                    f"Feast {size:>9,}: {run.status}, {secs} s, peak "
                    f"{_mb(run, limit_mb)} MB{extra}"
                )
                if run.ok and ours[size].ok:
                    compared[size] = compare(folder / f"ours_{size}.parquet", out)

    table = Table(title="Point-in-time training set (customer + terminal views)")
    for name in [
        "label rows",
        "ours s\n(1st call)",
        "ours s\n(warm)",
        "ours peak\nMB",
        "Feast s",
        "Feast peak\nMB",
        "rows\nours / Feast",
        "values equal\n(common rows)",
    ]:
        table.add_column(name, justify="right")
    for size in sizes:
        mine = ours[size]
        theirs = feast.get(size)
        if theirs is None:
            f_secs = f_mb = "skipped" if args.skip_feast or python is None else "n.r."
        elif theirs.ok:
            f_secs, f_mb = _secs(theirs), _mb(theirs, limit_mb)
        else:
            f_secs = f"did not finish\n({theirs.status}, {theirs.seconds:.0f} s)"
            f_mb = _mb(theirs, limit_mb)
        comparison = compared.get(size)
        if comparison is None:
            rows = f"{mine.report['rows_out']:,} / n.a." if mine.ok else "- / n.a."
            equal = "n.a."
        else:
            rows = f"{comparison.rows_ours:,} / {comparison.rows_feast:,}"
            equal = (
                "yes"
                if comparison.mismatched_rows == 0
                else f"{comparison.mismatched_rows:,} mismatches"
            )
        table.add_row(
            f"{size:,}",
            _secs(mine),
            _secs(mine, "warm_seconds"),
            _mb(mine, limit_mb),
            f_secs,
            f_mb,
            rows,
            equal,
        )
    console.print(table)
    console.print(
        "ours peak = the join process's peak RSS (interpreter, imports, label rows "
        "and result included); 1st call = the first join in a fresh process "
        f"(warm = best of {JOIN_REPEATS - 1} more). n.r. = not run: a smaller size "
        "did not finish. * = polled RSS when the process failed."
    )
    for size, c in compared.items():
        worst = {k: v for k, v in c.mismatches.items() if v}
        console.print(
            f"{size:,} rows: Feast dropped {c.dropped:,} label rows "
            f"({c.dropped_stale:,} with a view that has no value inside its ttl, "
            f"{c.dropped_same_key:,} sharing entity and timestamp with another label "
            f"row), returned {c.extra:,} extra; on the {c.common:,} common rows "
            f"{c.mismatched_rows:,} differ" + (f": {worst}" if worst else "") + ". "
            f"Label rows with a view stale: {c.stale:,}; sharing entity and "
            f"timestamp: {c.same_key:,}."
        )

    console.print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    target = ours.get(TARGET_ROWS)
    if target is None:
        console.print(f"target: not measured (add {TARGET_ROWS:,} to --sizes)")
        return 0
    passed = (
        target.ok
        and target.report["seconds"] <= TARGET_SECONDS
        and target.report["peak_mb"] <= TARGET_MB
    )
    verdict = "[bold green]PASS[/]" if passed else "[bold red]FAIL[/]"
    console.print(
        f"target {TARGET_ROWS:,} rows <= {TARGET_SECONDS:g} s and <= "
        f"{TARGET_MB / 1024:g} GB on {args.cores} cores: {_secs(target)} s, "
        f"{_mb(target, limit_mb)} MB -> {verdict}"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_join":
        workspace_, spine_, out_, as_of_ = sys.argv[2:6]
        sys.exit(join_child(Path(workspace_), Path(spine_), Path(out_), as_of_))
    sys.exit(main())
