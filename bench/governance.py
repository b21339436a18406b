"""Benchmark the cost of governance: serving with grants + audit on versus off,
the patient_risk pipeline with PII protection on versus off, in one run, and
`audit verify` over 1 M records.

Serving is measured as bench/realtime.py measures it (its workspace copy, wrk
Lua script and event clock): every request is a new event (a distinct
transaction id, an increasing time; customer, terminal and amount of real
silver rows), so the online state stays the size it really is and no request
repeats an event already stored. `aistack serve` on each --workers count,
first with no policy and no prediction audit ("off"), then with a policy (the
bearer token of a `service` principal checked on every request) and every
prediction audited ("on"), alternating --rounds times. Each round measures
single rows on 8 connections as fast as answered (requests/s), then paced at
1,000 requests/s on 20 connections (wrk's Lua delay() schedule; p99 over
every request of the run). The audit log must have grown by at least the
requests answered in the "on" runs (at least once).

PII: the patient_risk pipeline (ingest, silver, train, score) in process, in
a fresh workspace each time, as declared (bronze encrypts the PII columns;
silver keeps a keyed pseudonym of the national id and encrypts name, birth
date, address and phone) and with its PII declarations removed, alternating
--rounds times. Serving has no PII step: a request carries at most the
pseudonym, and no clear PII reaches the server.

Targets: "on" at most 10 % slower than "off"; p99 < 10 ms at 1,000
requests/s with the audit on; `audit verify` over 1 M records in at most 5 s
(signed: a seal every 1,000 records, as a server flushing once a second at
1,000 requests/s writes them, each checked).

    .venv/bin/python bench/governance.py                  # small temp workspace
    .venv/bin/python bench/governance.py --workspace WS   # copy of a built one
    .venv/bin/python bench/governance.py --quick          # 1 round, 3 s runs
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realtime as rt  # the paced method and its new events

import serving as sv  # server start/stop, machine lines
from aistack.contract import Pii, SilverTable, UseCase, get_use_case
from aistack.governance.audit import GENESIS, chain_lines, entry, verify
from aistack.governance.principals import Policy, Principal, hash_token, new_token
from aistack.lake.delta import Lake
from aistack.runner import run
from aistack.settings import load_settings
from aistack.workspace import Workspace

VERIFY_RECORDS = 1_000_000
SEAL_EVERY = 1_000
SLOWDOWN_TARGET = 0.10
P99_TARGET_MS = 10.0
VERIFY_TARGET_S = 5.0
SINGLE_CONNECTIONS = 8
PII_USE_CASE = "patient_risk"
ROUTE = f"/v1/{rt.USE_CASE}/predict"

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Figures:
    """Everything measured, by configuration."""

    serving: dict[tuple[int, str], list[rt.LoadRun]] = field(default_factory=dict)
    """(workers, "off" | "on") -> its runs, every round."""
    pipeline: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """"off" | "on" -> seconds per stage (and "total"), every round."""
    audited: int = 0
    """Records the "on" servers added to the audit log."""
    answered_on: int = 0
    """Requests the "on" servers answered (warm-ups included)."""


def policy_file(folder: Path) -> tuple[Path, str]:
    """A policy with one service principal; its token."""
    token = new_token()
    policy = Policy(folder / "policy.toml")
    policy.principals["svc"] = Principal("svc", ("service",), (), hash_token(token))
    policy.save()
    return folder / "policy.toml", token


def audit_records(workspace: Path) -> int:
    """Records in the workspace's audit log."""
    path = workspace / "audit" / "audit.jsonl"
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


def serve_round(
    ctx: rt.Context, config: sv.Config, token: str | None, figures: Figures
) -> list[rt.LoadRun]:
    """Warm-up, then as fast as answered and paced, against one configuration."""
    if token:
        os.environ["BENCH_AUTH"] = token  # read by the wrk script
    else:
        os.environ.pop("BENCH_AUTH", None)
    script = ctx.logs.parent / "events.lua"
    script.write_text(rt.LUA)
    quiet = sv.wait_quiet(ctx.args.quiet_wait) if ctx.args.quiet_wait > 0 else ""
    before = audit_records(ctx.settings.workspace)
    runs: list[rt.LoadRun] = []
    with sv.running(config, ctx.settings, ctx.logs) as server:
        console.print(f"  {config.name}: ready" + (f"; {quiet}" if quiet else ""))
        warm = replace(ctx.sizes, duration=rt.WARMUP_S)
        warm_up = rt.Loader(server, ctx.synth, warm, script, []).go("warm-up", ROUTE, 4)
        load = rt.Loader(server, ctx.synth, ctx.sizes, script, runs)
        load.go("single", ROUTE, SINGLE_CONNECTIONS)
        load.go("paced", ROUTE, rt.PACED_CONNECTIONS, rate=rt.PACED_RATE)
        console.print(f"    {sv.busy_processes()}")
    for r in runs:
        if r.failure or r.errors:
            console.print(f"  [red]{r.test}: {r.failure or r.errors} errors[/red]")
    if token:  # the server has stopped: its audit buffer is flushed
        figures.audited += audit_records(ctx.settings.workspace) - before
        figures.answered_on += warm_up.requests + sum(r.requests for r in runs)
    return runs


def serving_section(ctx: rt.Context, workers: list[int], figures: Figures) -> None:
    """Off and on in alternation, `--rounds` times, on each worker count."""
    policy, token = policy_file(ctx.tmp)
    for count in workers:
        configs = {
            "off": (
                sv.Config(
                    "ours",
                    workers=count,
                    name=f"governance off, {count} worker(s)",
                    env=(("AISTACK_AUDIT_PREDICTIONS", "false"),),
                ),
                None,
            ),
            "on": (
                sv.Config(
                    "ours",
                    workers=count,
                    name=f"grants + audit on, {count} worker(s)",
                    env=(
                        ("AISTACK_POLICY", str(policy)),
                        ("AISTACK_TOKEN", token),  # `serve` needs predict
                        ("AISTACK_AUDIT_PREDICTIONS", "true"),
                    ),
                ),
                token,
            ),
        }
        for _ in range(ctx.args.rounds):
            for key, (config, bearer) in configs.items():
                runs = serve_round(ctx, config, bearer, figures)
                figures.serving.setdefault((count, key), []).extend(runs)
    os.environ.pop("BENCH_AUTH", None)


class UnprotectedTable(SilverTable):
    """A silver table with its PII declarations ignored (stored in clear)."""

    @property
    def pii(self) -> dict[str, Pii]:
        """None: nothing is pseudonymised or encrypted."""
        return {}


def without_pii(use_case: UseCase) -> UseCase:
    """`use_case` with every silver table's PII declarations removed."""
    tables = tuple(
        UnprotectedTable(
            s.name, s.source, s.transform, s.contract, s.key, s.references, s.latest_by
        )
        for s in use_case.silver
    )
    return replace(use_case, silver=tables)


def pipeline_section(ctx: rt.Context, figures: Figures) -> None:
    """The PII use case's pipeline with PII protection on and off, alternating."""
    args, tmp = ctx.args, ctx.tmp
    use_case = get_use_case(PII_USE_CASE)
    assert isinstance(use_case, UseCase)
    variants = {"off": without_pii(use_case), "on": use_case}
    stages = ("ingest", "silver") if args.quick else None
    # a key for this process only (never printed): PII protection needs one
    os.environ.setdefault(ctx.settings.pii_key_env, os.urandom(32).hex())
    kwargs = {"stages": stages} if stages else {}
    # untimed: the first run pays the imports (MLflow, the learners)
    run(
        use_case,
        Workspace(load_settings(workspace=tmp / "pii-warm-up", seed=0)),
        use_case.params(),
        **kwargs,
    )
    for k in range(args.rounds):
        for key, variant in variants.items():
            ws = Workspace(load_settings(workspace=tmp / f"pii-{key}-{k}", seed=0))
            quiet = sv.wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else ""
            start = time.perf_counter()
            report = run(variant, ws, variant.params(), **kwargs)
            seconds = {**report.seconds, "total": time.perf_counter() - start}
            _check_protection(ws.lake, key == "on")
            figures.pipeline.setdefault(key, []).append(seconds)
            stage_text = ", ".join(f"{s} {v:.2f}" for s, v in seconds.items())
            console.print(
                f"  PII {key}: {stage_text} s" + (f"; {quiet}" if quiet else "")
            )


def _check_protection(lake: Lake, protected: bool) -> None:
    """Silver holds encrypted names when protected, clear ones otherwise."""
    names = lake.read("silver.patients", columns=["full_name"]).column(0)
    encrypted = all(v.startswith("enc1:") for v in names.to_pylist()[:100])
    if encrypted != protected:
        msg = f"silver.patients.full_name encrypted={encrypted}, expected {protected}"
        raise SystemExit(msg)


def verify_figures(folder: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of a signed `verify` over VERIFY_RECORDS records."""
    path = folder / "audit.jsonl"
    record = entry("svc", "predict", {"use_case": "fraud", "model_version": 3})
    key = os.urandom(32)
    prev, seq = GENESIS, 0
    with path.open("wb") as out:
        for _ in range(VERIFY_RECORDS // SEAL_EVERY):
            lines = list(chain_lines([record] * SEAL_EVERY, prev, seq, key=key))
            out.writelines(lines)
            prev, seq = lines[-1][:64].decode(), seq + len(lines)
    wall, cpu = time.perf_counter(), time.process_time()
    found = verify(path, key=key)
    assert found.broken is None, found.broken
    return time.perf_counter() - wall, time.process_time() - cpu, found.checked


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace", type=Path, help="start from a copy of this built workspace"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round, 3 s runs, PII on the landing stages only",
    )
    parser.add_argument("--duration", type=float, help="s per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, help="off/on alternations (default 2)")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="serving worker counts, comma-separated (each measured off and on)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15,
        help="before each server and pipeline run, wait up to this many seconds "
        "for the CPUs to go quiet (0: don't)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.duration = args.duration or (3.0 if args.quick else 5.0)
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve off/on, run the pipeline off/on, verify 1 M records; the figures."""
    args = parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    started = time.perf_counter()
    console.print(f"[bold]bench/governance.py[/bold]: {sv.machine_line()}")
    console.print(f"before: {sv.busy_processes()}")
    figures = Figures()
    sizes = replace(rt.QUICK, duration=args.duration)
    with tempfile.TemporaryDirectory(prefix="aistack-bench-gov-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        how = rt.prepare_workspace(args, sizes, tmp)
        settings = load_settings(workspace=tmp / "workspace")
        use_case = get_use_case(rt.USE_CASE)
        assert isinstance(use_case, UseCase)
        synth = rt.make_synthetic(Lake(settings.tables_dir), use_case, tmp)
        ctx = rt.Context(settings, use_case, synth, sizes, tmp, logs, args)
        console.rule("serving: grants + audit off / on")
        serving_section(ctx, workers, figures)
        console.rule(f"pipeline: {PII_USE_CASE} with PII protection off / on")
        pipeline_section(ctx, figures)
        wall, cpu, checked = verify_figures(tmp)
    console.print(figures_table(figures, wall, cpu, checked, args))
    console.print(
        f"Workspace {how}. Audit: the 'on' servers answered "
        f"{figures.answered_on:,} requests and added {figures.audited:,} records "
        f"to the audit log. Whole bench {time.perf_counter() - started:.0f} s; "
        f"after: {sv.busy_processes()}"
    )
    if figures.audited < figures.answered_on:
        console.print("[red]fewer audit records than answered requests[/red]")
        return 1
    return 0


def _median(runs: list[rt.LoadRun], test: str, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs if r.test == test)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figures_table(
    figures: Figures,
    wall: float,
    cpu: float,
    checked: int,
    args: argparse.Namespace,
) -> Table:
    """Medians over rounds, on versus off, and the targets."""
    table = Table(
        title=f"cost of governance (median of {args.rounds} round(s), "
        f"{args.duration:g} s per wrk run)"
    )
    for column in ("measure", "off", "on", "on vs off", "target", "verdict"):
        table.add_column(column)
    for count in sorted({w for w, _ in figures.serving}):
        off, on = figures.serving[count, "off"], figures.serving[count, "on"]
        off_rps, on_rps = (_median(r, "single", "rps") for r in (off, on))
        slower = 1 - on_rps / off_rps
        table.add_row(
            f"{count} worker(s): requests/s, c={SINGLE_CONNECTIONS}",
            f"{off_rps:,.0f}",
            f"{on_rps:,.0f}",
            f"{-slower:+.1%}",
            "≤ 10 % slower",
            _verdict(slower <= SLOWDOWN_TARGET),
        )
        off_p99, on_p99 = (_median(r, "paced", "p99_ms") for r in (off, on))
        off_rate, on_rate = (_median(r, "paced", "rps") for r in (off, on))
        every = " / ".join(
            f"{r.p99_ms:.1f}" for r in on if r.test == "paced"
        )  # each round's, so one noisy round shows
        table.add_row(
            f"{count} worker(s): p99 ms at {rt.PACED_RATE:,} req/s",
            f"{off_p99:.2f} ({off_rate:,.0f}/s)",
            f"{on_p99:.2f} ({on_rate:,.0f}/s; rounds {every})",
            f"{on_p99 - off_p99:+.2f} ms",
            "< 10 ms",
            _verdict(
                on_p99 < P99_TARGET_MS
                and on_rate >= rt.TARGET_PACED_SHARE * rt.PACED_RATE
            ),
        )
    off_runs, on_runs = figures.pipeline["off"], figures.pipeline["on"]
    for stage in off_runs[0]:
        off_s = statistics.median(r[stage] for r in off_runs)
        on_s = statistics.median(r[stage] for r in on_runs)
        if max(off_s, on_s) < 0.01:  # a stage with nothing to do (gold here)
            continue
        table.add_row(
            f"{PII_USE_CASE} {stage}, s (PII protection)",
            f"{off_s:.2f}",
            f"{on_s:.2f}",
            f"{on_s / off_s - 1:+.0%}",
            "",
            "",
        )
    table.add_row(
        "serving with PII protection",
        "",
        "not applicable",
        "",
        "",
        "",
    )
    table.add_row(
        f"audit verify, {checked:,} records",
        "",
        f"{wall:.2f} s wall, {cpu:.2f} s CPU",
        "",
        "≤ 5 s",
        _verdict(wall <= VERIFY_TARGET_S),
    )
    return table


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown, as bench/realtime.py: a native runtime thread
    # (delta-rs / DuckDB) can abort the process at exit
    os._exit(code)
