"""Benchmark the cost of governance: serving with grants + audit on versus off,
in one run, and `audit verify` over 1 M records.

Serving reuses bench/serving.py's machinery (workspace, request bodies, server
start/stop, wrk with its Lua script): our server with one worker, first with no
policy and no prediction audit ("off"), then with a policy (bearer token of a
`service` principal checked on every request) and every prediction audited
("on"), alternating `--rounds` times. Each round measures single rows at
concurrency 8 (requests/s) and paced at 1,000 requests/s (p99). Targets: "on"
at most 10 % slower than "off", p99 < 10 ms paced with audit on; `audit
verify` over 1 M records in at most 5 s (signed: a seal every 1,000 records, as
a server flushing once a second at 1,000 requests/s writes them, each checked).

    .venv/bin/python bench/governance.py                 # small temp workspace
    .venv/bin/python bench/governance.py --workspace /tmp/bench_ws --rounds 2
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as sv
from aistack.contract import get_use_case
from aistack.governance.audit import GENESIS, chain_lines, entry, verify
from aistack.governance.principals import (
    Policy,
    Principal,
    hash_token,
    new_token,
)
from aistack.settings import load_settings

VERIFY_RECORDS = 1_000_000
SEAL_EVERY = 1_000
SLOWDOWN_TARGET = 0.10
P99_TARGET_MS = 10.0
VERIFY_TARGET_S = 5.0


def policy_file(folder: Path) -> tuple[Path, str]:
    """A policy with one service principal; its token."""
    token = new_token()
    policy = Policy(folder / "policy.toml")
    policy.principals["svc"] = Principal("svc", ("service",), (), hash_token(token))
    policy.save()
    return folder / "policy.toml", token


def serve_round(
    plan: sv.Plan, config: sv.Config, token: str | None, console: Console
) -> list[sv.Run]:
    """Concurrency-8 and paced runs against one configuration."""
    if token:
        os.environ["BENCH_AUTH"] = token  # read by sv.http and the wrk script
    else:
        os.environ.pop("BENCH_AUTH", None)
    single = sv.Load("single", "/v1/fraud/predict", plan.work.ours_single, 8)
    paced = replace(
        single, test="paced", concurrency=sv.PACED_CONNECTIONS, rate=sv.PACED_RATE
    )
    runs: list[sv.Run] = []
    quiet = sv.wait_quiet(plan.args.quiet_wait) if plan.args.quiet_wait > 0 else ""
    with sv.running(config, plan.settings, plan.logs) as server:
        console.print(
            f"  {config.label}: ready; {sv._load()}" + (f"; {quiet}" if quiet else "")
        )
        sv.wrk(server, replace(single, test="warm-up"), sv.WARMUP_S, 1)
        for load in (single, paced):
            run = sv.wrk(server, load, plan.args.duration, 1)
            if run.failure or run.errors:
                console.print(f"  [red]{load.test}: {run.failure or run.errors}[/red]")
            runs.append(run)
            console.print(
                f"    {load.test}: {run.rps:,.0f} req/s, p99 {run.p99_ms:.2f} ms; "
                f"{sv.busy_processes()}"
            )
    return runs


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
    parser.add_argument("--workspace", type=Path, help="reuse this workspace")
    parser.add_argument("--duration", type=float, default=10, help="s per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on alternations")
    parser.add_argument("--online-url", default=None)
    parser.add_argument(
        "--workers", type=int, default=1, help="serving worker processes (each run)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        help="s to wait, before each server, for other work to leave the CPUs",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve off/on in alternation, verify 1 M records, print the figures."""
    args = parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(f"[bold]bench/governance.py[/bold]: {sv.machine_line()}")
    console.print(f"before: {sv._load()}")
    runs: dict[str, list[sv.Run]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="aistack-bench-gov-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        workspace, how = sv.prepare_workspace(args, tmp, console)
        settings = load_settings(workspace=workspace, online_url=args.online_url)
        work = sv.build_workload(get_use_case("fraud"), settings, tmp, args.seed)
        plan = sv.Plan(args, work, settings, logs, time.perf_counter())
        policy, token = policy_file(tmp)
        configs = {
            "off": (
                sv.Config(
                    "ours",
                    workers=args.workers,
                    name="governance off",
                    env=(("AISTACK_AUDIT_PREDICTIONS", "false"),),
                ),
                None,
            ),
            "on": (
                sv.Config(
                    "ours",
                    workers=args.workers,
                    name="grants + audit on",
                    env=(
                        ("AISTACK_POLICY", str(policy)),
                        ("AISTACK_TOKEN", token),  # `serve` needs predict
                        ("AISTACK_AUDIT_PREDICTIONS", "true"),
                    ),
                ),
                token,
            ),
        }
        for _ in range(args.rounds):
            for key, (config, bearer) in configs.items():
                runs[key].extend(serve_round(plan, config, bearer, console))
        audited = sum(1 for _ in (workspace / "audit" / "audit.jsonl").open("rb"))
        wall, cpu, checked = verify_figures(tmp)
    console.print(figures_table(runs, wall, cpu, checked, args))
    console.print(
        f"workspace {how}; audit log after the runs: {audited:,} records; "
        f"after: {sv._load()}"
    )
    return 0


def _median(runs: list[sv.Run], test: str, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs if r.test == test)


def figures_table(
    runs: dict[str, list[sv.Run]],
    wall: float,
    cpu: float,
    checked: int,
    args: argparse.Namespace,
) -> Table:
    """Medians over rounds, the ratio on/off, and the targets."""
    table = Table(
        title=f"cost of governance (median of {args.rounds} rounds, "
        f"{args.duration:g} s per run, {args.workers} worker(s))"
    )
    for column in ("measure", "off", "on", "on vs off", "target", "verdict"):
        table.add_column(column)
    off_rps, on_rps = (_median(runs[k], "single", "rps") for k in ("off", "on"))
    slower = 1 - on_rps / off_rps
    table.add_row(
        "requests/s, c=8",
        f"{off_rps:,.0f}",
        f"{on_rps:,.0f}",
        f"{-slower:+.1%}",
        "≤ 10 % slower",
        "PASS" if slower <= SLOWDOWN_TARGET else "FAIL",
    )
    off_p99, on_p99 = (_median(runs[k], "paced", "p99_ms") for k in ("off", "on"))
    off_rate, on_rate = (_median(runs[k], "paced", "rps") for k in ("off", "on"))
    table.add_row(
        f"p99 ms at {sv.PACED_RATE:,} req/s offered",
        f"{off_p99:.2f} ({off_rate:,.0f}/s)",
        f"{on_p99:.2f} ({on_rate:,.0f}/s)",
        f"{on_p99 - off_p99:+.2f} ms",
        "< 10 ms",
        "PASS"
        if on_p99 < P99_TARGET_MS and on_rate >= 0.95 * sv.PACED_RATE
        else "FAIL",
    )
    table.add_row(
        f"audit verify, {checked:,} records",
        "",
        f"{wall:.2f} s wall, {cpu:.2f} s CPU",
        "",
        "≤ 5 s",
        "PASS" if wall <= VERIFY_TARGET_S else "FAIL",
    )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
