"""Benchmark the fraud data path: simulate -> bronze -> silver -> gold.

Three sections, each in its own subprocess so that each peak memory is clean:

* platform: the simulator's daily batches through `ingest` (bronze), `build_silver`
  and `build_gold` in a fresh temporary workspace, Delta writes included;
* pandas: the same silver checks and gold features written the plain pandas way
  (to_numeric / to_datetime, boolean masks, `handbook_features` groupby + rolling),
  from the same simulated rows as all-string columns (what bronze holds);
* simulator: the vectorised `simulate` against the handbook's row-by-row pandas
  generator (`simulate_rowwise_pandas`), the latter timed on a subset.

Prints rows/s and peak memory per stage, the platform / pandas ratios and the
targets (PASS/FAIL). Exits 0 when a target is missed; 1 only when a section fails.

    .venv/bin/python bench/pipeline.py                     # handbook size
    .venv/bin/python bench/pipeline.py --days 30 --skip-pandas
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil
from rich.console import Console
from rich.table import Table

T = TypeVar("T")
MIB = 2**20
SECTIONS = ("simulator", "platform", "pandas")
HANDBOOK_PANDAS_S = 71.0  # the figure for the handbook feature code
BARE_DUCKDB_S = 3.0  # a bare DuckDB window query for the same features

TARGET_BRONZE_TO_GOLD_S = 20.0
TARGET_GOLD_RATIO = 15.0
TARGET_SIMULATOR_RATIO = 10.0
TARGET_PEAK_MIB = 1024.0


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        """Peak RSS in MiB."""
        return self.peak / MIB


@dataclass
class Stage:
    """One timed stage: rows it processed, wall seconds, process peak RSS."""

    name: str
    rows: int
    seconds: float
    peak_mib: float
    note: str = ""

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class SectionResult:
    """What a section child reports back to the parent."""

    stages: list[Stage] = field(default_factory=list)
    peak_mib: float = 0.0  # ru_maxrss of the child process, whole lifetime
    info: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> Stage | None:
        """The stage called `name`, if the section ran it."""
        return next((s for s in self.stages if s.name == name), None)


def timed(func: Callable[[], T]) -> tuple[T, float, float]:
    """Run `func`; return its value, wall seconds and peak RSS (MiB) meanwhile."""
    gc.collect()
    with PeakRss() as peak:
        start = time.perf_counter()
        value = func()
        seconds = time.perf_counter() - start
    return value, seconds, peak.mib


def max_rss_mib() -> float:
    """Peak RSS of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- #
# Section: our platform
# --------------------------------------------------------------------------- #


def section_platform(args: argparse.Namespace) -> SectionResult:
    """Simulated batches through bronze, silver and gold in a temp workspace."""
    from aistack.contract import get_use_case  # noqa: PLC0415
    from aistack.features.gold import build_gold  # noqa: PLC0415
    from aistack.lake.bronze import ingest  # noqa: PLC0415
    from aistack.lake.silver import build_silver  # noqa: PLC0415
    from aistack.settings import load_settings  # noqa: PLC0415
    from aistack.workspace import Workspace  # noqa: PLC0415

    out = SectionResult()
    out.info["rss_after_imports_mib"] = psutil.Process().memory_info().rss / MIB
    uc = get_use_case("fraud")
    params = uc.params(
        customers=args.customers,
        terminals=args.terminals,
        days=args.days,
        bad_rows=args.bad_rows,
    )
    batches, seconds, peak = timed(lambda: list(uc.read_sources(params, args.seed)))
    tx_rows = sum(b.data.num_rows for b in batches if b.source == "transactions")
    out.stages.append(
        Stage("simulate (source batches)", tx_rows, seconds, peak, "not in total")
    )
    with tempfile.TemporaryDirectory(prefix="aistack-bench-") as tmp:
        ws = Workspace(load_settings(workspace=Path(tmp), seed=args.seed))
        lake, now = ws.lake, datetime.now(UTC)

        bronze, seconds, peak = timed(partial(ingest, lake, batches, ingested_at=now))
        batches.clear()  # the source rows are not needed past bronze
        out.stages.append(
            Stage("ingest -> bronze", sum(bronze.new_rows.values()), seconds, peak)
        )

        silver, seconds, peak = timed(
            lambda: [build_silver(lake, s, processed_at=now) for s in uc.silver]
        )
        bronze_rows = sum(r.bronze_rows for r in silver)
        out.stages.append(Stage("bronze -> silver", bronze_rows, seconds, peak))
        out.info["silver_rows"] = {r.table: r.silver_rows for r in silver}
        out.info["quarantined_rows"] = {r.table: r.quarantined_rows for r in silver}

        gold, seconds, peak = timed(
            lambda: [build_gold(lake, uc, v, written_at=now) for v in uc.views]
        )
        silver_tx = out.info["silver_rows"]["silver.transactions"]
        out.stages.append(
            Stage("silver -> gold", silver_tx, seconds, peak, "rows = silver tx in")
        )
        out.info["gold_rows"] = {g.table: g.new_rows for g in gold}
    out.peak_mib = max_rss_mib()
    return out


# --------------------------------------------------------------------------- #
# Section: the plain pandas way
# --------------------------------------------------------------------------- #

# Handbook column -> (kind, lower bound, upper bound, allowed values, nullable):
# the same checks as the fraud contracts (aistack.usecases.fraud.contract).
Rule = tuple[str, float | None, float | None, tuple[int, ...] | None, bool]
CUSTOMER_RULES: dict[str, Rule] = {
    "CUSTOMER_ID": ("int", 0, None, None, False),
    "x_customer_id": ("float", 0, 100, None, False),
    "y_customer_id": ("float", 0, 100, None, False),
    "mean_amount": ("float", 0, None, None, False),
    "std_amount": ("float", 0, None, None, False),
    "mean_nb_tx_per_day": ("float", 0, None, None, False),
}
TERMINAL_RULES: dict[str, Rule] = {
    "TERMINAL_ID": ("int", 0, None, None, False),
    "x_terminal_id": ("float", 0, 100, None, False),
    "y_terminal_id": ("float", 0, 100, None, False),
}
TRANSACTION_RULES: dict[str, Rule] = {
    "TRANSACTION_ID": ("int", 0, None, None, False),
    "TX_DATETIME": ("datetime", None, None, None, False),
    "CUSTOMER_ID": ("int", 0, None, None, False),
    "TERMINAL_ID": ("int", 0, None, None, False),
    "TX_AMOUNT": ("float", 0, None, None, False),
    "TX_FRAUD": ("int", None, None, (0, 1), False),
    "TX_FRAUD_SCENARIO": ("int", None, None, (0, 1, 2, 3), True),
}


def pandas_silver(
    raw: Any,  # noqa: ANN401 - pandas.DataFrame of strings; pandas imported lazily
    rules: dict[str, Rule],
    key: str,
    references: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(typed good rows, raw quarantined rows with `_check`) the pandas way."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    typed = pd.DataFrame(index=raw.index)
    failed: dict[str, Any] = {}
    for column, (kind, low, high, allowed, nullable) in rules.items():
        text = raw[column].str.strip()
        if kind == "datetime":
            value = pd.to_datetime(text, errors="coerce", format="ISO8601")
        else:
            value = pd.to_numeric(text, errors="coerce")
            if kind == "int":
                value = value.where(value % 1 == 0)
        if not nullable:
            failed[f"{column}: not null"] = raw[column].isna()
        failed[f"{column}: dtype({kind})"] = raw[column].notna() & value.isna()
        if low is not None:
            failed[f"{column}: >= {low}"] = value < low
        if high is not None:
            failed[f"{column}: <= {high}"] = value > high
        if allowed is not None:
            failed[f"{column}: isin"] = value.notna() & ~value.isin(allowed)
        typed[column] = value.astype("Int64") if kind == "int" else value
    bad = np.logical_or.reduce([m.to_numpy() for m in failed.values()])
    repeated = typed[key].duplicated(keep="first") & ~bad
    failed[f"{key}: duplicate_key"] = repeated
    bad |= repeated.to_numpy()
    for column, allowed_values in (references or {}).items():
        unknown = ~bad & ~typed[column].isin(allowed_values)
        failed[f"{column}: foreign_key"] = unknown
        bad |= unknown.to_numpy()
    quarantine = raw[bad].copy()
    quarantine["_check"] = [
        "; ".join(name for name, mask in failed.items() if mask.iloc[i])
        for i in np.flatnonzero(bad)
    ]
    good = typed[~bad].astype(
        {c: "int64" for c, r in rules.items() if r[0] == "int" and not r[4]}
    )
    return good.reset_index(drop=True), quarantine


def pandas_silver_all(raw: dict[str, Any]) -> tuple[Any, int]:
    """Silver transactions and the number of quarantined rows of all three tables."""
    good_c, bad_c = pandas_silver(raw["customers"], CUSTOMER_RULES, "CUSTOMER_ID")
    good_t, bad_t = pandas_silver(raw["terminals"], TERMINAL_RULES, "TERMINAL_ID")
    refs = {"CUSTOMER_ID": good_c["CUSTOMER_ID"], "TERMINAL_ID": good_t["TERMINAL_ID"]}
    good_tx, bad_tx = pandas_silver(
        raw["transactions"], TRANSACTION_RULES, "TRANSACTION_ID", refs
    )
    return good_tx, len(bad_c) + len(bad_t) + len(bad_tx)


def _as_strings(table: Any) -> Any:  # noqa: ANN401 - pyarrow.Table
    """Every column cast to string, as bronze stores it."""
    import pyarrow as pa  # noqa: PLC0415

    return pa.table({n: table.column(n).cast(pa.string()) for n in table.column_names})


def section_pandas(args: argparse.Namespace) -> SectionResult:
    """Silver and gold the plain pandas way, from the all-string rows."""
    from aistack.usecases.fraud.handbook import handbook_features  # noqa: PLC0415
    from aistack.usecases.fraud.simulator import (  # noqa: PLC0415
        inject_bad_rows,
        simulate,
        transactions_as_strings,
    )

    out = SectionResult()

    def prepare() -> dict[str, Any]:
        sim = simulate(
            n_customers=args.customers,
            n_terminals=args.terminals,
            n_days=args.days,
            seed=args.seed,
        )
        tx = (
            inject_bad_rows(sim.transactions, n_per_kind=args.bad_rows, seed=args.seed)
            if args.bad_rows
            else transactions_as_strings(sim.transactions)
        )
        return {
            "customers": _as_strings(sim.customers).to_pandas(),
            "terminals": _as_strings(sim.terminals).to_pandas(),
            "transactions": tx.to_pandas(),
        }

    raw, seconds, peak = timed(prepare)
    n_in = sum(len(frame) for frame in raw.values())
    n_tx = len(raw["transactions"])
    out.stages.append(
        Stage("simulate + as strings", n_tx, seconds, peak, "not compared")
    )
    (silver_tx, quarantined), seconds, peak = timed(partial(pandas_silver_all, raw))
    raw.clear()  # the raw rows are not needed past silver
    out.stages.append(Stage("silver (pandas)", n_in, seconds, peak))
    out.info["silver_rows"] = len(silver_tx)
    out.info["quarantined_rows"] = quarantined

    features, seconds, peak = timed(lambda: handbook_features(silver_tx))
    out.stages.append(
        Stage("gold (handbook_features)", len(silver_tx), seconds, peak, "no write")
    )
    out.info["gold_rows"] = len(features)
    out.peak_mib = max_rss_mib()
    return out


# --------------------------------------------------------------------------- #
# Section: vectorised simulator vs row-by-row pandas generator
# --------------------------------------------------------------------------- #


def subset_size(args: argparse.Namespace) -> tuple[int, int, int]:
    """(customers, terminals, days) of the row-by-row generator's subset."""
    return max(1, args.customers // 10), max(1, args.terminals // 10), args.days


def section_simulator(args: argparse.Namespace) -> SectionResult:
    """`simulate` at full size (and on the subset) vs `simulate_rowwise_pandas`."""
    from aistack.usecases.fraud.simulator import (  # noqa: PLC0415
        simulate,
        simulate_rowwise_pandas,
    )

    out = SectionResult()
    simulate(n_customers=50, n_terminals=100, n_days=5, seed=args.seed)  # warm-up
    size = {"n_customers": args.customers, "n_terminals": args.terminals}
    sim, seconds, peak = timed(
        lambda: simulate(**size, n_days=args.days, seed=args.seed)
    )
    out.stages.append(
        Stage("simulate (vectorised)", sim.transactions.num_rows, seconds, peak)
    )
    del sim
    c, t, d = subset_size(args)
    label = f"subset {c} c, {t} t, {d} d"
    sub = {"n_customers": c, "n_terminals": t, "n_days": d, "seed": args.seed}
    sim, seconds, peak = timed(lambda: simulate(**sub))
    rows = sim.transactions.num_rows
    out.stages.append(
        Stage("simulate (vectorised, subset)", rows, seconds, peak, label)
    )
    sim, seconds, peak = timed(lambda: simulate_rowwise_pandas(**sub))
    rows = sim.transactions.num_rows
    out.stages.append(
        Stage("simulate_rowwise_pandas (subset)", rows, seconds, peak, label)
    )
    out.peak_mib = max_rss_mib()
    return out


SECTION_FUNCS: dict[str, Callable[[argparse.Namespace], SectionResult]] = {
    "simulator": section_simulator,
    "platform": section_platform,
    "pandas": section_pandas,
}


# --------------------------------------------------------------------------- #
# Parent: run the sections, print the report
# --------------------------------------------------------------------------- #


def run_section(name: str, args: argparse.Namespace, console: Console) -> SectionResult:
    """Run one section in a fresh interpreter and read back its result."""
    with tempfile.TemporaryDirectory(prefix="aistack-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--section",
            name,
            "--result",
            str(result_path),
            f"--customers={args.customers}",
            f"--terminals={args.terminals}",
            f"--days={args.days}",
            f"--bad-rows={args.bad_rows}",
            f"--seed={args.seed}",
        ]
        with console.status(f"running section [bold]{name}[/bold] ..."):
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
        if done.returncode != 0 or not result_path.exists():
            console.print(f"[red]section {name} failed (exit {done.returncode})[/red]")
            console.print(done.stderr[-4000:], markup=False, highlight=False)
            raise SystemExit(1)
        raw = json.loads(result_path.read_text())
    console.print(f"section {name}: {wall:.1f} s wall (including imports)")
    stages = [Stage(**s) for s in raw.pop("stages")]
    return SectionResult(stages=stages, **raw)


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def stage_table(results: dict[str, SectionResult]) -> Table:
    """Every stage of every section: rows, seconds, rows/s, peak MiB."""
    table = Table(title="Stages (peak = process RSS during the stage)")
    for column in ("section", "stage", "rows", "seconds", "rows/s", "peak MiB", "note"):
        justify = "left" if column in {"section", "stage", "note"} else "right"
        table.add_column(column, justify=justify)
    for section, result in results.items():
        for s in result.stages:
            table.add_row(
                section,
                s.name,
                f"{s.rows:,}",
                f"{s.seconds:.2f}",
                _fmt_rate(s.rate),
                f"{s.peak_mib:,.0f}",
                s.note,
            )
        if section == "platform":
            chain = [result.stage(n) for n in BRONZE_TO_GOLD]
            found = [s for s in chain if s is not None]
            seconds = sum(s.seconds for s in found)
            rows = found[0].rows if found else 0
            table.add_row(
                section,
                "[bold]bronze -> gold total[/bold]",
                f"{rows:,}",
                f"[bold]{seconds:.2f}[/bold]",
                _fmt_rate(rows / seconds if seconds else float("nan")),
                f"{max((s.peak_mib for s in found), default=0):,.0f}",
                "ingest + silver + gold",
            )
        table.add_section()
    return table


BRONZE_TO_GOLD = ("ingest -> bronze", "bronze -> silver", "silver -> gold")


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]SKIP[/yellow]"
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def _ratio(slow: Stage | None, fast: Stage | None) -> float | None:
    """How many times faster `fast` is than `slow`, by rows/s."""
    if slow is None or fast is None or not fast.seconds or not slow.seconds:
        return None
    return fast.rate / slow.rate


def target_table(results: dict[str, SectionResult], *, full_size: bool) -> Table:
    """Each issue target: measured value, target, PASS/FAIL."""
    table = Table(title="Targets")
    for column in ("target", "measured", "wanted", "result"):
        table.add_column(column, justify="left" if column == "target" else "right")
    ours = results.get("platform", SectionResult())
    pandas = results.get("pandas", SectionResult())
    sim = results.get("simulator", SectionResult())

    chain = [ours.stage(n) for n in BRONZE_TO_GOLD]
    if all(s is not None for s in chain):
        seconds = sum(s.seconds for s in chain if s is not None)
        ok: bool | None = seconds <= TARGET_BRONZE_TO_GOLD_S
        table.add_row(
            "bronze -> gold (validation, Delta writes)",
            f"{seconds:.2f} s",
            f"<= {TARGET_BRONZE_TO_GOLD_S:.0f} s",
            _verdict(ok),
        )
    gold = _ratio(
        pandas.stage("gold (handbook_features)"), ours.stage("silver -> gold")
    )
    table.add_row(
        "gold features vs pandas (pandas s / ours s)",
        "-" if gold is None else f"{gold:.1f}x",
        f">= {TARGET_GOLD_RATIO:.0f}x",
        _verdict(None if gold is None else gold >= TARGET_GOLD_RATIO),
    )
    our_gold = ours.stage("silver -> gold")
    if full_size and our_gold is not None and our_gold.seconds:
        table.add_row(
            f"gold vs the issue's {HANDBOOK_PANDAS_S:.0f} s pandas reference (info)",
            f"{HANDBOOK_PANDAS_S / our_gold.seconds:.1f}x",
            f">= {TARGET_GOLD_RATIO:.0f}x",
            "[dim]info[/dim]",
        )
    silver = _ratio(pandas.stage("silver (pandas)"), ours.stage("bronze -> silver"))
    table.add_row(
        "silver vs pandas (info: ours writes Delta)",
        "-" if silver is None else f"{silver:.1f}x",
        "-",
        "[dim]info[/dim]",
    )
    speedup = _ratio(
        sim.stage("simulate_rowwise_pandas (subset)"),
        sim.stage("simulate (vectorised)"),
    )
    table.add_row(
        "simulator vs row-by-row pandas (rows/s)",
        "-" if speedup is None else f"{speedup:.1f}x",
        f">= {TARGET_SIMULATOR_RATIO:.0f}x",
        _verdict(None if speedup is None else speedup >= TARGET_SIMULATOR_RATIO),
    )
    peak = ours.peak_mib if ours.stages else None
    table.add_row(
        "peak memory, platform section (ru_maxrss)",
        "-" if peak is None else f"{peak:,.0f} MiB",
        f"<= {TARGET_PEAK_MIB:,.0f} MiB",
        _verdict(None if peak is None else peak <= TARGET_PEAK_MIB),
    )
    return table


def print_notes(
    results: dict[str, SectionResult], args: argparse.Namespace, console: Console
) -> None:
    """Peak memory per section, row-count agreement and how to read the numbers."""
    for name, result in results.items():
        console.print(f"peak memory, {name} section: {result.peak_mib:,.0f} MiB")
    ours = results.get("platform")
    if ours is not None:
        info = ours.info
        console.print(
            f"platform: RSS after imports {info['rss_after_imports_mib']:,.0f} MiB; "
            f"silver rows {info['silver_rows']}; quarantined "
            f"{info['quarantined_rows']}; gold rows written {info['gold_rows']}"
        )
    pandas = results.get("pandas")
    if pandas is not None:
        info = pandas.info
        console.print(
            f"pandas: silver transactions {info['silver_rows']:,}, quarantined "
            f"{info['quarantined_rows']:,}, feature rows {info['gold_rows']:,}"
        )
    c, t, d = subset_size(args)
    console.print(
        f"simulate_rowwise_pandas is timed on a subset ({c} customers, {t} terminals, "
        f"{d} days): its rows/s is a rate from that subset, compared with the "
        "vectorised simulator's rate at full size."
    )
    console.print(
        "For scale: the handbook's pandas features take about "
        f"{HANDBOOK_PANDAS_S:.0f} s at handbook size, a bare DuckDB window query "
        f"about {BARE_DUCKDB_S:.0f} s. "
        "Our gold step includes dedup, ordering and two Delta writes; pandas writes "
        "nothing."
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--bad-rows", type=int, default=0, help="bad rows of each kind to inject"
    )
    parser.add_argument(
        "--skip-pandas", action="store_true", help="skip the slow pandas section"
    )
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every section (or, in a child, one section) and print the report."""
    args = parse_args(argv)
    if args.section is not None:  # child: run one section, write its result
        result = SECTION_FUNCS[args.section](args)
        args.result.write_text(json.dumps(asdict(result)))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 132)
    cores = len(os.sched_getaffinity(0))
    console.print(
        f"[bold]bench/pipeline.py[/bold]: {args.customers} customers, "
        f"{args.terminals} terminals, {args.days} days, seed {args.seed}, "
        f"bad rows/kind {args.bad_rows}; {cores} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; {_load()}"
    )
    sections = [s for s in SECTIONS if not (args.skip_pandas and s == "pandas")]
    results = {name: run_section(name, args, console) for name in sections}
    console.print(stage_table(results))
    full_size = (args.customers, args.terminals, args.days) == (5000, 10000, 183)
    console.print(target_table(results, full_size=full_size))
    print_notes(results, args, console)
    console.print(
        f"{_load()} at the end: other work on the machine skews timings "
        "(ours and pandas alike)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
