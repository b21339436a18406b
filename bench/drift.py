"""Benchmark: per-column data drift, ours against Evidently's data-drift preset.

Generates a seeded reference and current frame (default 1,000,000 rows each, 30
features: 20 numeric-dtype columns - normal, lognormal, uniform, exponential,
Student t, integer-valued with many values, one with missing values, one integer
with 8 levels and one with 4 levels - and 10 string columns with 2 to 20 levels,
one binary, one with missing values, one with a level new in current). Drift is
injected into a known subset (mean shift, scale change, category re-weighting, a
new category), a few of them close to the default thresholds; the rest are drawn
from the same distribution. Both frames are written to Parquet so that both tools
read identical data.

* ours: `aistack.monitoring.drift.detect_drift` with default settings, in a fresh
  process (first call timed, then a warm call);
* Evidently: `Report([DataDriftPreset()])` in the virtual environment
  `bench/.venvs/evidently` (created on first use; Evidently 0.7 does not import
  under pandas 3), told the same numerical / categorical columns as ours chose,
  under a time and a memory limit.

Peak memory is VmHWM reset (`/proc/self/clear_refs`) once the frames are loaded,
so it is the peak during the drift computation with both frames resident; the
frames' own size and the process peak including the Parquet load are shown too.
Prints seconds, peak memory, each column's test and verdict for both tools, how
many verdicts agree where both use the same test, and the issue's target (PASS /
FAIL). Exits 0 when a target is missed; 1 only when our computation fails.

    .venv/bin/python bench/drift.py [--rows 1000000] [--skip-evidently]
        [--evidently-timeout 400] [--memory-limit-gb 8] [--cores 2]
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from aistack.contract import DriftSettings
from aistack.monitoring.drift import column_kind, detect_drift

BENCH_DIR = Path(__file__).resolve().parent
EVIDENTLY_VENV = BENCH_DIR / ".venvs" / "evidently"
EVIDENTLY_WORKER = BENCH_DIR / "_evidently_worker.py"
EVIDENTLY_VERSION = "0.7.23"
# Evidently declares no upper bound on pandas, but 0.7 fails to import under
# pandas 3 (pandas.core.dtypes.common.infer_dtype_from_object is gone).
EVIDENTLY_EXTRAS = ("pandas<3", "pyarrow")
SEED = 20240601
OURS_TIMEOUT = 600.0
ISSUE_EVIDENTLY_S = 140.0  # the issue's figures for Evidently 0.7 at 1 M rows
ISSUE_EVIDENTLY_MB = 2.1 * 1024

# |ours - Evidently| above abs + rel * |Evidently| counts as a different score
# (ours evaluates W1 at quantile midpoints: within O(1/n) when sizes differ).
SCORE_TOLERANCE = (1e-4, 1e-3)

TARGET_ROWS = 1_000_000
TARGET_SECONDS = 3.0
TARGET_MB = 0.7 * 1024
TARGET_RATIO = 40.0

console = Console(width=160)
EVIDENTLY_KINDS = {"num": "numeric", "cat": "categorical"}  # ColumnType values
FloatArray = npt.NDArray[np.float64]
Draw = Callable[[np.random.Generator, int, bool], pa.Array]


# ------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Feature:
    """One generated column: how to draw it and what changes in current."""

    name: str
    draw: Draw  # (rng, rows, current?) -> values
    drift: str  # the drift injected into current, "-" for none


def _num(
    ref: Callable[[np.random.Generator, int], FloatArray],
    cur: Callable[[np.random.Generator, int], FloatArray] | None = None,
    *,
    missing: tuple[float, float] = (0.0, 0.0),
    integer: bool = False,
) -> Draw:
    """A numeric column: `ref` draws the reference, `cur` (or `ref`) the current."""

    def draw(rng: np.random.Generator, rows: int, current: bool) -> pa.Array:
        values = (cur if current and cur is not None else ref)(rng, rows)
        if integer:
            return pa.array(np.rint(values).astype(np.int64))
        share = missing[int(current)]
        mask = rng.random(rows) < share if share else None
        return pa.array(np.asarray(values, dtype=np.float64), mask=mask)

    return draw


def _shares(weights: tuple[float, ...]) -> FloatArray:
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()


def _cat(
    prefix: str,
    ref: tuple[float, ...],
    cur: tuple[float, ...] | None = None,
    *,
    missing: float = 0.0,
    labels: tuple[str, ...] | None = None,
) -> Draw:
    """A string column with len(ref) levels (current may re-weight or add levels)."""
    weights_cur = cur or ref
    count = max(len(ref), len(weights_cur))
    names = labels or tuple(f"{prefix}_{k:02d}" for k in range(count))

    def draw(rng: np.random.Generator, rows: int, current: bool) -> pa.Array:
        weights = _shares(weights_cur if current else ref)
        codes = rng.choice(len(weights), size=rows, p=weights).astype(np.int32)
        mask = rng.random(rows) < missing if missing else None
        dictionary = pa.DictionaryArray.from_arrays(
            pa.array(codes, mask=mask), pa.array(names)
        )
        return dictionary.cast(pa.string())

    return draw


def _zipf(levels: int, power: float) -> tuple[float, ...]:
    return tuple(1 / k**power for k in range(1, levels + 1))


FEATURES: tuple[Feature, ...] = (
    Feature(
        "n00_normal",
        _num(lambda g, n: g.normal(0, 1, n), lambda g, n: g.normal(0.5, 1, n)),
        "mean +0.5 sd",
    ),
    Feature("n01_normal", _num(lambda g, n: g.normal(100, 15, n)), "-"),
    Feature(
        "n02_normal",
        _num(lambda g, n: g.normal(-3, 2, n), lambda g, n: g.normal(-2.76, 2, n)),
        "mean +0.12 sd",
    ),
    Feature(
        "n03_normal",
        _num(lambda g, n: g.normal(0, 1, n), lambda g, n: g.normal(0.08, 1, n)),
        "mean +0.08 sd",
    ),
    Feature(
        "n04_normal",
        _num(lambda g, n: g.normal(5, 1, n), lambda g, n: g.normal(5, 1.5, n)),
        "sd x1.5",
    ),
    Feature(
        "n05_normal",
        _num(lambda g, n: g.normal(0, 1, n), lambda g, n: g.normal(0, 1.1, n)),
        "sd x1.1",
    ),
    Feature("n06_lognormal", _num(lambda g, n: g.lognormal(0, 0.5, n)), "-"),
    Feature(
        "n07_lognormal",
        _num(lambda g, n: g.lognormal(3, 1, n), lambda g, n: g.lognormal(3, 1.2, n)),
        "sigma 1 -> 1.2",
    ),
    Feature(
        "n08_lognormal",
        _num(
            lambda g, n: g.lognormal(1, 0.8, n),
            lambda g, n: 1.3 * g.lognormal(1, 0.8, n),
        ),
        "x1.3",
    ),
    Feature("n09_uniform", _num(lambda g, n: g.uniform(0, 1, n)), "-"),
    Feature(
        "n10_uniform",
        _num(lambda g, n: g.uniform(-5, 5, n), lambda g, n: g.uniform(-4, 6, n)),
        "shift +1 (0.35 sd)",
    ),
    Feature("n11_uniform", _num(lambda g, n: g.uniform(0, 100, n)), "-"),
    Feature("n12_int_poisson", _num(lambda g, n: g.poisson(50, n), integer=True), "-"),
    Feature(
        "n13_int_range",
        _num(
            lambda g, n: g.integers(0, 1001, n),
            lambda g, n: g.integers(50, 1051, n),
            integer=True,
        ),
        "shift +50 (0.17 sd)",
    ),
    Feature(
        "n14_int_counts",
        _num(lambda g, n: g.negative_binomial(3, 0.1, n), integer=True),
        "-",
    ),
    Feature(
        "n15_exponential",
        _num(lambda g, n: g.exponential(2, n), lambda g, n: g.exponential(2.5, n)),
        "scale 2 -> 2.5",
    ),
    Feature(
        "n16_missing",
        _num(lambda g, n: g.normal(10, 3, n), missing=(0.05, 0.10)),
        "missing 5% -> 10%",
    ),
    Feature(
        "n17_int_8_levels",
        _num(
            lambda g, n: g.choice(8, n),
            lambda g, n: g.choice(8, n, p=_shares((1, 1, 1, 1, 1, 1, 2, 2))),
            integer=True,
        ),
        "levels 6,7 x2",
    ),
    Feature("n18_student_t", _num(lambda g, n: g.standard_t(3, n)), "-"),
    Feature(
        "n19_int_4_levels",
        _num(
            lambda g, n: 1 + g.choice(4, n, p=_shares((1, 2, 3, 4))),
            lambda g, n: 1 + g.choice(4, n, p=_shares((2, 2, 3, 3))),
            integer=True,
        ),
        "1:2:3:4 -> 2:2:3:3",
    ),
    Feature(
        "c00_binary", _cat("", (3, 7), (5, 5), labels=("yes", "no")), "30% -> 50% yes"
    ),
    Feature("c01_3_levels", _cat("plan", (5, 3, 2)), "-"),
    Feature(
        "c02_5_levels",
        _cat("region", (5, 4, 3, 2, 1), (1, 2, 3, 4, 5)),
        "shares reversed",
    ),
    Feature("c03_8_levels", _cat("device", _zipf(8, 0.7)), "-"),
    Feature(
        "c04_10_levels",
        _cat("channel", tuple(range(10, 0, -1)), (15.5, *range(9, 0, -1))),
        "top level 18% -> 26%",
    ),
    Feature(
        "c05_12_missing", _cat("branch", _zipf(12, 0.5), missing=0.03), "- (3% missing)"
    ),
    Feature(
        "c06_15_new_level",
        _cat("product", (1,) * 15 + (0,), (0.95 / 15,) * 15 + (0.05,)),
        "new level, 5%",
    ),
    Feature("c07_20_levels", _cat("city", _zipf(20, 1.0)), "-"),
    Feature(
        "c08_20_levels", _cat("merchant", _zipf(20, 1.1), (1,) * 20), "zipf -> uniform"
    ),
    Feature("c09_6_levels", _cat("segment", (3, 3, 2, 2, 1, 1)), "-"),
)


def write_frames(rows: int, folder: Path) -> tuple[Path, Path]:
    """Draw the reference and current frames (seeded) and write them to Parquet."""
    paths = folder / "reference.parquet", folder / "current.parquet"
    for current, path in enumerate(paths):
        arrays = [
            f.draw(np.random.default_rng([SEED, i, current]), rows, bool(current))
            for i, f in enumerate(FEATURES)
        ]
        table = pa.table(arrays, names=[f.name for f in FEATURES])
        pq.write_table(table, path)
    return paths


# -------------------------------------------------------------------------- child


def _status(key: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB.

    VmHWM, not `getrusage().ru_maxrss`: Linux carries the latter over from the
    parent across fork + exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def ours_child(reference_path: Path, current_path: Path) -> int:
    """Time `detect_drift` on the two Parquet frames in this fresh process."""
    load_start = time.perf_counter()
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    load_seconds = time.perf_counter() - load_start
    frames_mb = (
        reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum()
    ) / 2**20
    load_peak = _status("VmHWM")
    pa.default_memory_pool().release_unused()  # the Parquet reader's leftovers
    reset = _reset_peak()
    before = _status("VmRSS")

    start = time.perf_counter()
    results = detect_drift(reference, current)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")

    start = time.perf_counter()
    detect_drift(reference, current)
    warm = time.perf_counter() - start
    settings = DriftSettings()
    start = time.perf_counter()
    for name in reference.columns:
        column_kind(reference[name], settings)
    kinds_seconds = time.perf_counter() - start

    report = {
        "pandas": pd.__version__,
        "load_seconds": load_seconds,
        "seconds": seconds,
        "warm_seconds": warm,
        "kinds_seconds": kinds_seconds,
        "threads": settings.threads,
        "frames_mb": frames_mb,
        "dtypes": {name: str(dtype) for name, dtype in reference.dtypes.items()},
        "load_peak_mb": load_peak,
        "rss_before_mb": before,
        "peak_mb": peak if reset else max(peak, load_peak),
        "rise_mb": (peak if reset else max(peak, load_peak)) - before,
        "without_frames_mb": (peak if reset else max(peak, load_peak)) - frames_mb,
        "peak_reset": reset,
        "process_peak_mb": max(peak, load_peak),
        "columns": {
            r.column: {
                "kind": r.kind,
                "test": r.test,
                "score": r.statistic,
                "threshold": r.threshold,
                "drifted": r.drifted,
                "psi": r.psi,
            }
            for r in results
        },
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
        """True when the child exited 0 and printed its report."""
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
    cmd: list[str],
    *,
    timeout: float,
    memory_mb: float,
    logs: Path,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run `cmd`, killing its process group past `timeout` s or `memory_mb` RSS.

    The child's last stdout line is its JSON report.
    """
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, start_new_session=True, env=env
        )
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


# ---------------------------------------------------------------------- evidently


def evidently_python(version: str) -> Path | None:
    """Interpreter of the bench's Evidently venv, created on first use."""
    python = EVIDENTLY_VENV / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import evidently, pandas; print(evidently.__version__, pandas.__version__)",
    ]
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    start = time.perf_counter()
    if python.exists():
        found = subprocess.run(
            check, capture_output=True, text=True, check=False, env=env
        )
        if found.returncode == 0 and found.stdout.split()[:1] == [version]:
            console.print(
                f"Evidently venv: reusing {EVIDENTLY_VENV} (evidently, pandas = "
                f"{found.stdout.strip()}; checked in "
                f"{time.perf_counter() - start:.1f} s)"
            )
            return python
    console.print(
        f"Evidently venv: creating {EVIDENTLY_VENV} with evidently=={version} "
        f"{' '.join(EVIDENTLY_EXTRAS)} ..."
    )
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(EVIDENTLY_VENV)],
        [
            *(str(python), "-m", "pip", "install", "--quiet"),
            *("--disable-pip-version-check", f"evidently=={version}"),
            *EVIDENTLY_EXTRAS,
        ],
        check,
    ]
    for step in steps:
        done = subprocess.run(
            step, capture_output=True, text=True, check=False, env=env
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            console.print(
                f"[bold red]Evidently venv setup FAILED[/] at `{' '.join(step[:4])}` "
                f"after {time.perf_counter() - start:.1f} s:\n{tail}\n"
                "Reporting our own figures only."
            )
            return None
    console.print(
        f"Evidently venv: set up in {time.perf_counter() - start:.1f} s "
        f"(evidently, pandas = {done.stdout.strip()})"
    )
    return python


# ------------------------------------------------------------------------ compare


@dataclass
class Comparison:
    """Per-column verdicts of both tools."""

    same_test: list[str]
    agree: list[str]
    disagree: list[str]
    other_test: list[str]  # both ran but chose different tests
    max_abs_diff: dict[str, float]  # same test: largest |ours - Evidently| score
    score_differs: list[str]  # same test, scores differ beyond SCORE_TOLERANCE


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> Comparison:
    """Match the columns of the two reports."""
    same, agree, disagree, other, differs = [], [], [], [], []
    diffs: dict[str, float] = {}
    for name, mine in ours.items():
        them = theirs.get(name)
        if them is None:
            continue
        if them["test"] != mine["test"]:
            other.append(name)
            continue
        same.append(name)
        (agree if bool(them["drifted"]) == mine["drifted"] else disagree).append(name)
        diff = abs(float(mine["score"]) - float(them["score"]))
        diffs[mine["test"]] = max(diffs.get(mine["test"], 0.0), diff)
        if diff > SCORE_TOLERANCE[0] + SCORE_TOLERANCE[1] * abs(float(them["score"])):
            differs.append(name)
    return Comparison(same, agree, disagree, other, diffs, differs)


# --------------------------------------------------------------------------- main


def _score(value: float | None, test: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if test in ("ks", "chi2", "z") else f"{value:.4f}"


def _yes(value: bool | None) -> str:
    if value is None:
        return "-"
    return "[bold]drift[/]" if value else "no"


def _mb(run: ChildRun | None, key: str = "peak_mb") -> str:
    if run is None:
        return "-"
    if run.ok:
        return f"{run.report[key]:,.0f}"
    return f"> {run.polled_peak_mb:,.0f}" if run.status == "out of memory" else "-"


def _secs(run: ChildRun | None, key: str = "seconds") -> str:
    if run is None:
        return "-"
    if run.ok:
        return f"{run.report[key]:.2f}"
    if run.status == "timeout":
        return f"> {run.seconds:.0f} (timeout)"
    return f"- ({run.status})"


def _limit_cores(cores: int) -> str:
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:cores]
    os.sched_setaffinity(0, chosen)  # inherited by every child process
    return f"{len(chosen)} of {os.cpu_count()} cores (CPU affinity {chosen})"


def column_table(
    ours: dict[str, Any], theirs: dict[str, Any], inferred: dict[str, str]
) -> Table:
    """One row per column: injected drift, both tests, scores and verdicts."""
    table = Table(title="Per column (score: p-value for ks / chi2 / z, else distance)")
    for name, justify in [
        ("column", "left"),
        ("injected drift", "left"),
        ("kind\n(ours)", "left"),
        ("Evidently\ninfers", "left"),
        ("test\nours", "left"),
        ("score\nours", "right"),
        ("verdict\nours", "left"),
        ("test\nEvidently", "left"),
        ("score\nEvidently", "right"),
        ("verdict\nEvidently", "left"),
        ("agree", "left"),
    ]:
        table.add_column(name, justify=justify)
    drift = {f.name: f.drift for f in FEATURES}
    for name, mine in ours.items():
        them = theirs.get(name, {})
        if not them:
            agree = "n.a."
        elif them["test"] != mine["test"]:
            agree = "other test"
        elif bool(them["drifted"]) == mine["drifted"]:
            agree = "[green]yes[/]"
        else:
            agree = "[bold red]NO[/]"
        ev_kind = EVIDENTLY_KINDS.get(inferred.get(name, "-"), inferred.get(name, "-"))
        if ev_kind not in ("-", mine["kind"]):
            ev_kind = f"[yellow]{ev_kind}[/]"
        table.add_row(
            name,
            drift.get(name, "?"),
            mine["kind"],
            ev_kind,
            mine["test"],
            _score(mine["score"], mine["test"]),
            _yes(mine["drifted"]),
            them.get("test", "-"),
            _score(them.get("score"), them.get("test", "")),
            _yes(them.get("drifted")),
            agree,
        )
    return table


def summary_table(ours: ChildRun, theirs: ChildRun | None, note: str) -> Table:
    """Seconds and memory of both tools."""
    table = Table(title="Drift computation, reference vs current")
    for name in [
        "",
        "seconds\n(1st call)",
        "seconds\n(warm)",
        "peak MB\n(computation)",
        "of which\nframes MB",
        "peak minus\nframes MB",
        "rise MB\n(peak - RSS\nbefore)",
        "peak MB\n(process)",
        "Parquet load s",
        "import s",
    ]:
        table.add_column(name, justify="right")
    table.add_row(
        f"ours (pandas {ours.report.get('pandas', '?')})",
        _secs(ours),
        _secs(ours, "warm_seconds"),
        _mb(ours),
        _mb(ours, "frames_mb"),
        _mb(ours, "without_frames_mb"),
        _mb(ours, "rise_mb"),
        _mb(ours, "process_peak_mb"),
        _secs(ours, "load_seconds"),
        "-",
    )
    if theirs is None:
        table.add_row(
            f"Evidently ({note})",
            f"~{ISSUE_EVIDENTLY_S:.0f} (issue)",
            "-",
            f"~{ISSUE_EVIDENTLY_MB / 1024:.1f} GB (issue)",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
        )
    else:
        label = (
            f"Evidently {theirs.report['evidently']} (pandas {theirs.report['pandas']})"
            if theirs.ok
            else "Evidently"
        )
        table.add_row(
            label,
            _secs(theirs),
            "-",
            _mb(theirs),
            _mb(theirs, "frames_mb"),
            _mb(theirs, "without_frames_mb"),
            _mb(theirs, "rise_mb"),
            _mb(theirs, "process_peak_mb"),
            _secs(theirs, "load_seconds"),
            _secs(theirs, "import_seconds"),
        )
    return table


def _ratio(ours: ChildRun, theirs: ChildRun | None) -> tuple[float | None, str]:
    """Evidently's seconds over ours, and how it was obtained."""
    if theirs is None:
        return ISSUE_EVIDENTLY_S / ours.report["seconds"], "against the issue's 140 s"
    if theirs.ok:
        return theirs.report["seconds"] / ours.report["seconds"], "measured"
    if theirs.status == "timeout":
        return theirs.seconds / ours.report["seconds"], "lower bound (timeout)"
    return None, f"n.a. (Evidently {theirs.status})"


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=TARGET_ROWS)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--evidently-timeout", type=float, default=400.0)
    parser.add_argument("--memory-limit-gb", type=float, default=8.0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--evidently-version", default=EVIDENTLY_VERSION)
    args = parser.parse_args(argv)
    limit_mb = args.memory_limit_gb * 1024

    console.rule("[bold]data drift: aistack detect_drift vs Evidently DataDriftPreset")
    console.print(
        f"{_limit_cores(args.cores)}; {psutil.virtual_memory().total / 2**30:.1f} GB "
        f"RAM; {args.rows:,} rows in reference and {args.rows:,} in current, "
        f"{len(FEATURES)} features; Evidently limits {args.evidently_timeout:.0f} s "
        f"and {args.memory_limit_gb:g} GB; load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="aistack-bench-drift-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        reference, current = write_frames(args.rows, folder)
        sizes = sum(p.stat().st_size for p in (reference, current)) / 2**20
        console.print(
            f"frames generated and written to Parquet in "
            f"{time.perf_counter() - start:.1f} s ({sizes:,.0f} MB on disk)"
        )

        cmd = [sys.executable, __file__, "_ours", str(reference), str(current)]
        ours = run_limited(
            cmd, timeout=OURS_TIMEOUT, memory_mb=limit_mb, logs=folder / "ours"
        )
        if not ours.ok:
            console.print(f"[bold red]ours {ours.status}[/]\n{ours.error}")
            return 1
        r = ours.report
        console.print(
            f"ours: first call {r['seconds']:.2f} s, warm {r['warm_seconds']:.2f} s "
            f"({r['threads']} threads; column_kind alone {r['kinds_seconds']:.2f} s); "
            f"peak {r['peak_mb']:,.0f} MB during the call (RSS "
            f"{r['rss_before_mb']:,.0f} MB before it, frames {r['frames_mb']:,.0f} MB)"
        )

        theirs: ChildRun | None = None
        note = "skipped"
        python = (
            None if args.skip_evidently else evidently_python(args.evidently_version)
        )
        if python is None and not args.skip_evidently:
            note = "venv setup failed"
        if python is not None:
            kinds = {name: c["kind"] for name, c in r["columns"].items()}
            spec = {
                "reference": str(reference),
                "current": str(current),
                "numerical": [n for n, k in kinds.items() if k == "numeric"],
                "categorical": [n for n, k in kinds.items() if k == "categorical"],
            }
            spec_path = folder / "evidently_spec.json"
            spec_path.write_text(json.dumps(spec))
            theirs = run_limited(
                [str(python), str(EVIDENTLY_WORKER), str(spec_path)],
                timeout=args.evidently_timeout,
                memory_mb=limit_mb,
                logs=folder / "evidently",
                env={**os.environ, "DO_NOT_TRACK": "1"},
            )
            if theirs.ok:
                e = theirs.report
                console.print(
                    f"Evidently: {e['seconds']:.2f} s, peak {e['peak_mb']:,.0f} MB "
                    f"during the report (RSS {e['rss_before_mb']:,.0f} MB before it, "
                    f"frames {e['frames_mb']:,.0f} MB); import "
                    f"{e['import_seconds']:.1f} s, Parquet load "
                    f"{e['load_seconds']:.1f} s"
                )
            else:
                console.print(
                    f"[bold red]Evidently did not finish[/]: {theirs.status} after "
                    f"{theirs.seconds:.0f} s (polled peak {theirs.polled_peak_mb:,.0f}"
                    f" MB)" + (f"\n{theirs.error}" if theirs.error else "")
                )

    their_columns = theirs.report["columns"] if theirs and theirs.ok else {}
    inferred = theirs.report["inferred"] if theirs and theirs.ok else {}
    console.print(column_table(r["columns"], their_columns, inferred))
    console.print(summary_table(ours, theirs, note))
    console.print(
        "peak MB (computation) = VmHWM of the process, reset after the Parquet load "
        "(and after Arrow's pool returned its unused memory), so the interpreter, "
        "imports and both frames are included; frames = DataFrame.memory_usage(deep="
        "True) of both; rise = peak - RSS just before the call; peak MB (process) "
        "includes the load. 1st call = the first detect_drift in a fresh process."
    )

    comparison = compare(r["columns"], their_columns) if their_columns else None
    if comparison is not None:
        diffs = ", ".join(f"{t} {d:.2g}" for t, d in comparison.max_abs_diff.items())
        console.print(
            f"verdicts: {len(comparison.agree)} of {len(comparison.same_test)} agree "
            f"where both use the same test ({len(comparison.other_test)} columns with "
            f"another test: {comparison.other_test or 'none'}); largest |score "
            f"difference| per test: {diffs or '-'}"
        )
        for name in comparison.disagree:
            mine, them = r["columns"][name], their_columns[name]
            console.print(
                f"  [bold red]disagree[/] {name}: ours {mine['test']} "
                f"{mine['score']!r} (drift={mine['drifted']}) vs Evidently "
                f"{them['method']} {them['score']!r} (drift={them['drifted']}), "
                f"threshold {mine['threshold']} / {them['threshold']}"
            )
        for name in comparison.score_differs:
            mine, them = r["columns"][name], their_columns[name]
            console.print(
                f"  score differs {name} ({mine['test']}): ours {mine['score']:.4g} vs "
                f"Evidently {them['score']:.4g}, verdicts {mine['drifted']} / "
                f"{them['drifted']}"
            )
        for name in comparison.other_test:
            mine, them = r["columns"][name], their_columns[name]
            console.print(
                f"  other test {name}: ours {mine['test']} {mine['score']:.4g} vs "
                f"Evidently {them['method']} {them['score']:.4g}"
            )
        mismatched = {
            n: EVIDENTLY_KINDS.get(k, k)
            for n, k in inferred.items()
            if EVIDENTLY_KINDS.get(k, k) != r["columns"][n]["kind"]
        }
        if mismatched:
            console.print(
                "Evidently's own type inference (no data definition) would differ on "
                + ", ".join(f"{n} ({k})" for n, k in mismatched.items())
                + "; the bench passes ours' kinds as its DataDefinition."
            )

    seconds, peak = r["seconds"], r["peak_mb"]
    ratio, how = _ratio(ours, theirs)
    same = (
        None
        if comparison is None
        else not comparison.disagree and len(comparison.same_test) > 0
    )
    console.print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    checks = [
        (f"<= {TARGET_SECONDS:g} s", f"{seconds:.2f} s", seconds <= TARGET_SECONDS),
        (
            f"<= {TARGET_MB / 1024:g} GB peak during the call",
            f"{peak:,.0f} MB (frames {r['frames_mb']:,.0f} MB)",
            peak <= TARGET_MB,
        ),
        (
            f"<= {TARGET_MB / 1024:g} GB peak minus the input frames",
            f"{r['without_frames_mb']:,.0f} MB",
            r["without_frames_mb"] <= TARGET_MB,
        ),
        (
            f">= {TARGET_RATIO:g}x Evidently",
            f"{ratio:,.0f}x ({how})" if ratio is not None else how,
            ratio is not None and ratio >= TARGET_RATIO,
        ),
        (
            "same decisions (same test)",
            (
                f"{len(comparison.agree)}/{len(comparison.same_test)}"
                if comparison is not None
                else "not compared"
            ),
            same,
        ),
    ]
    table = Table(
        title=f"Target at {TARGET_ROWS:,} rows on {args.cores} cores"
        + ("" if args.rows == TARGET_ROWS else f" (this run: {args.rows:,} rows)")
    )
    for name in ("target", "measured", "verdict"):
        table.add_column(name)
    for target, measured, passed in checks:
        verdict = "[bold green]PASS[/]" if passed else "[bold red]FAIL[/]"
        table.add_row(target, measured, "n.a." if passed is None else verdict)
    console.print(table)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ours":
        sys.exit(ours_child(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(main())
