"""Benchmark real-time aggregation features: HTTP with the state update, parity, stream.

One run, one machine (2 cores), loopback only. Every figure is for the fraud use
case, whose two aggregation views (customer spending, terminal risk: 12
windowed features) are computed per request from the online event state
(SQLite in the workspace), and every scored request joins that state.

1. HTTP, single rows: `aistack serve` on 1 worker, `wrk` (keep-alive) as fast as
   answered; then 2 workers paced at a fixed 1,000 requests/s (wrk's Lua
   `delay()` schedule) and at half the measured 2-worker maximum. Every request
   is a new event: a distinct transaction_id and an increasing tx_datetime, with
   (customer, terminal, amount) of real silver rows; the event clock advances by
   the simulation's mean gap between events, so each entity holds as many
   events as in the simulation (the state stays the size it really is).
2. HTTP, the batch route: 1,000 new events per request on 2 workers (4 wrk
   threads, one connection each, each on its own entities, so no row is late).
3. Consistency: bootstrap the state as of an earlier time (`aistack materialize
   --as-of`), replay the later days through the server (2 workers) in time order,
   one event per request, with labels posted as they become known; then
   `check_consistency` (served values against their offline definition). The
   same replay in process gives the per-event feature latency and where a
   request's time goes. Side by side, Feast 0.67's online path (its own venv,
   bench/_feast_realtime_worker.py): the gold rows `materialize`d into its SQLite
   online store as of the same time (once; or again every replayed day, or
   hour, with `materialize_incremental`), one `get_online_features` call per
   replayed event; its values are compared with the same offline values (the
   gold rows of the replayed events).
4. Stream: `aistack stream` consumers on Redis Streams (a private redis-server):
   capacity (a backlog drained), then new events pushed at 60 % of it for 60 s:
   events/s scored, committed to the Delta prediction log and acknowledged, and
   event-to-prediction latency (from the input message's id to the output
   message's id, both Redis clock times) and event-to-commit latency (to the
   `commitInfo` time of the Delta version holding its log row). The consumers
   run with `--linger-ms 5 --commit-interval-ms 500` (`--stream-linger-ms`,
   `--stream-commit-interval-ms`): predictions are published as scored, the log
   committed every 0.5 s.

Targets (the issue's): >= 1,500 single-row requests/s per worker; p99 < 10 ms at
1,000 requests/s on 2 workers; >= 80,000 rows/s through the batch route on 2
workers; no mismatch in the replay. Exits 0 when a target is missed, 1 when a
stage fails.

    .venv/bin/python bench/realtime.py            # full (~8 min)
    .venv/bin/python bench/realtime.py --quick    # smoke test (~3 min)
    .venv/bin/python bench/realtime.py --workspace DIR   # copy of a built one
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import mlflow
import numpy as np
import orjson
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from rich.console import Console
from rich.table import Table
from training_set import FEAST_VERSION, feast_python  # the bench's Feast venv

import aistack.serving.requests as serving_mod
from aistack.contract import UseCase, get_use_case
from aistack.features.blob import _HEAD as BLOB_HEAD
from aistack.features.gold import EVENT_TIME, WRITTEN_AT
from aistack.features.online import open_store
from aistack.features.realtime import apply_labels, bootstrap
from aistack.features.state import EventState, open_event_state
from aistack.lake.delta import Lake
from aistack.monitoring.consistency import check_consistency
from aistack.registry.aliases import Registry
from aistack.serving.inference import Predictor, load_predictor
from aistack.serving.log import FEATURE_PREFIX, prediction_log_table
from aistack.serving.requests import commit_features, predict, request_features
from aistack.settings import Settings, load_settings
from serving import (  # bench/serving.py: same server handling and machine lines
    Config,
    Server,
    busy_processes,
    busy_seconds,
    free_port,
    machine_line,
    running,
    tree_line,
    wait_quiet,
)

USE_CASE = "fraud"
BENCH_DIR = Path(__file__).resolve().parent
FEAST_WORKER = BENCH_DIR / "_feast_realtime_worker.py"


@dataclass(frozen=True)
class Sizes:
    """How big and how long (full run or --quick)."""

    days: int
    customers: int
    terminals: int
    replay_days: int
    duration: float  # seconds per wrk run
    batch_probe: int  # 1,000-row batches timed in process
    stream_probe: int  # events pushed at once to measure the stream's capacity
    stream_seconds: float  # the sustained stream run


FULL = Sizes(40, 300, 600, 9, 10, 8, 20_000, 60)
QUICK = Sizes(60, 400, 800, 2, 3, 2, 3_000, 8)  # the tests' size: a champion

WARMUP_S = 2
SINGLE_CONCURRENCY = (1, 4, 16)  # 1 worker
MAX_CONCURRENCY_2W = 16  # 2 workers, as fast as answered
PACED_RATE = 1000  # requests/s
PACED_CONNECTIONS = 20
BATCH_ROWS = 1000
BATCH_CONNECTIONS = 4  # one wrk thread each, on disjoint entities; more than
# 2 so that both workers get some (the kernel hands connections out unevenly)
WRK_TIMEOUT_S = 10
REL_TOL = 1e-9  # as check_consistency
STREAM_BATCH = 500  # consumer micro-batch (the CLI default)
STREAM_CONSUMERS = 2
STREAM_LINGER_MS = 5  # micro-batches of tens of events, not a handful
STREAM_COMMIT_INTERVAL_MS = 500  # publish once scored; commit the log every 0.5 s
STREAM_SHARE = 0.6  # sustained rate: this share of the capacity (small batches
# cost more per event than the backlog's full ones)
FIRST_SYNTHETIC_ID = 10**10  # above every simulated transaction id

TARGET_RPS = 1500
TARGET_P99_MS = 10.0
TARGET_PACED_SHARE = 0.95
TARGET_ROWS_S = 80_000

console = Console(width=None if sys.stdout.isatty() else 160)

# --------------------------------------------------------------------------- #
# Synthetic new events (HTTP load and stream)
# --------------------------------------------------------------------------- #

LUA = r"""
-- Written by bench/realtime.py: POST new events (distinct ids, increasing times).
-- Event number seq = k * threads + thread_index (k: the thread's k-th event) has
-- id START_ID + seq and time START_US + seq * STEP_US; its other fields are
-- line (id * 7919) mod n + 1 of the thread's entities file. BENCH_RATE > 0
-- paces each thread on an absolute schedule (delay()); response() counts
-- answers that name a late view. BENCH_AUTH, when set, is sent as a bearer
-- token. done() prints one line "WRK_JSON {...}".
local entities_file = os.getenv("BENCH_ENTITIES")
local rows_per = tonumber(os.getenv("BENCH_ROWS") or "1") or 1
local start_id = tonumber(os.getenv("BENCH_START_ID"))
local start_us = tonumber(os.getenv("BENCH_START_US"))
local step_us = tonumber(os.getenv("BENCH_STEP_US"))
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
local id_field = os.getenv("BENCH_ID_FIELD")
local ts_field = os.getenv("BENCH_TS_FIELD")

local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

issued = 0
late = 0
local ents = {}
local count = 0
local headers = { ["Content-Type"] = "application/json" }
local token = os.getenv("BENCH_AUTH")
if token and #token > 0 then
  headers["Authorization"] = "Bearer " .. token
end

function init(args)
  local path = entities_file:gsub("{thread}", tostring(thread_index))
  for line in io.lines(path) do
    if #line > 0 then
      count = count + 1
      ents[count] = line
    end
  end
  if count == 0 then
    error("no entities in " .. path)
  end
end

local function event(k)
  local seq = k * nthreads + thread_index
  local ts = start_us + seq * step_us
  local secs = math.floor(ts / 1000000)
  local us = ts - secs * 1000000
  local id = start_id + seq
  return string.format('{"%s":%.0f,%s,"%s":"%s.%06d"}', id_field, id,
    ents[(id * 7919) % count + 1], ts_field,
    os.date("!%Y-%m-%dT%H:%M:%S", secs), us)
end

function request()
  local body
  if rows_per == 1 then
    body = event(issued)
    issued = issued + 1
  else
    local parts = {}
    for i = 1, rows_per do
      parts[i] = event(issued)
      issued = issued + 1
    end
    body = '{"rows":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format("POST", wrk.path, headers, body)
end

function response(status, headers, body)
  if status == 200 then
    local _, n = body:gsub('"late":%["', "")
    late = late + n
  end
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } rt_timespec;
    int clock_gettime(int clk_id, rt_timespec *tp);
  ]]
  local ts = ffi.new("rt_timespec")
  local interval_ms = 1000 / rate
  local start_ms = nil
  local sent = 0
  local function now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  function delay()
    local now = now_ms()
    if start_ms == nil then
      start_ms = now
    end
    local slot = start_ms + sent * interval_ms
    sent = sent + 1
    local wait = slot - now
    if wait <= 0 then
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, _)
  local most, lates = 0, 0
  for _, t in ipairs(threads) do
    local i = t:get("issued")
    if i > most then
      most = i
    end
    lates = lates + t:get("late")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "issued": %d, "late": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    most, lates))
end
"""


@dataclass
class Clock:
    """Ids and times of new events: distinct, increasing, after the simulation."""

    next_id: int
    next_us: int
    step_us: int

    def take(self, events: int) -> tuple[int, int]:
        """First id and time of `events` new events, reserved."""
        first = (self.next_id, self.next_us)
        self.next_id += events
        self.next_us += events * self.step_us
        return first


@dataclass
class Synthetic:
    """What new events are made of: real (entity, amount) rows, and the clock."""

    rows: list[dict[str, Any]]  # request columns of real silver rows, no id/time
    clock: Clock
    id_field: str
    ts_field: str
    entities: list[str]  # the aggregation views' entity columns
    folder: Path

    def entities_file(self, threads: int) -> str:
        """Entity lines (JSON fragments) per wrk thread; '{thread}' in the name.

        With several threads each gets the rows whose every entity key is
        congruent to its index, so two threads never send one entity.
        """
        for t in range(threads):
            lines = [
                orjson.dumps(r).decode()[1:-1]
                for r in self.rows
                if all(int(r[k]) % threads == t for k in self.entities)
            ]
            (self.folder / f"entities_{threads}_{t}.txt").write_text(
                "\n".join(lines) + "\n"
            )
        return str(self.folder / f"entities_{threads}_{{thread}}.txt")

    def payloads(self, n: int) -> list[dict[str, Any]]:
        """`n` new events (the same recipe as the Lua script, one thread)."""
        first_id, first_us = self.clock.take(n)
        out = []
        for seq in range(n):
            row = self.rows[((first_id + seq) * 7919) % len(self.rows)]
            ts = datetime(1970, 1, 1) + timedelta(
                microseconds=first_us + seq * self.clock.step_us
            )
            out.append(
                {self.id_field: first_id + seq, **row, self.ts_field: ts.isoformat()}
            )
        return out


def make_synthetic(lake: Lake, use_case: UseCase, folder: Path) -> Synthetic:
    """Real rows to draw from; the clock starts an hour after the last event."""
    labels = use_case.labels
    columns = [c for c in labels.columns if c not in (labels.id, labels.timestamp)]
    table = lake.read(labels.table, columns=[*columns, labels.timestamp])
    times = table.column(labels.timestamp)
    first, last = pc.min(times).as_py(), pc.max(times).as_py()
    per_day = table.num_rows / max((last - first) / timedelta(days=1), 1e-9)
    step_us = round(86_400e6 / per_day)
    start_us = (last + timedelta(hours=1) - datetime(1970, 1, 1)) // timedelta(
        microseconds=1
    )
    rows = table.select(columns).to_pylist()
    return Synthetic(
        rows,
        Clock(FIRST_SYNTHETIC_ID, start_us, step_us),
        labels.id,
        labels.timestamp,
        list(dict.fromkeys(v.entity for v in use_case.aggregation_views)),
        folder,
    )


@dataclass
class Context:
    """What every section runs with."""

    settings: Settings
    use_case: UseCase
    synth: Synthetic
    sizes: Sizes
    tmp: Path
    logs: Path
    args: argparse.Namespace


# --------------------------------------------------------------------------- #
# Workspace
# --------------------------------------------------------------------------- #


def aistack(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run the aistack CLI (this interpreter); its output, or exit loudly."""
    done = subprocess.run(
        [sys.executable, "-m", "aistack", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        console.print(f"[red]aistack {' '.join(args)} failed[/red]")
        console.print(done.stdout[-3000:] + done.stderr[-3000:], markup=False)
        raise SystemExit(1)
    return done.stdout


def prepare_workspace(args: argparse.Namespace, sizes: Sizes, tmp: Path) -> str:
    """A private workspace in `tmp` (built, or a copy of --workspace)."""
    workspace = tmp / "workspace"
    start = time.perf_counter()
    if args.workspace is not None:
        source = args.workspace.resolve()
        if not (source / "mlflow.db").exists():
            console.print(f"[red]{source} has no mlflow.db: run aistack first[/red]")
            raise SystemExit(1)
        shutil.copytree(source, workspace)
        # the copy's MLflow store still names the original's artifact folder;
        # nothing here writes artifacts, the models are only read
        return f"copy of {source}"
    size = {"days": sizes.days, "customers": sizes.customers}
    size["terminals"] = sizes.terminals
    flags = [f"--{k}={v}" for k, v in size.items()]
    aistack(["run", USE_CASE, *flags, "-w", str(workspace), "-q"])
    return (
        "built for this run ("
        + ", ".join(f"{v:,} {k}" for k, v in size.items())
        + f", {time.perf_counter() - start:.0f} s)"
    )


# --------------------------------------------------------------------------- #
# Load runs (wrk)
# --------------------------------------------------------------------------- #

_WRK_JSON = re.compile(r"^WRK_JSON (\{.*\})\s*$", re.MULTILINE)


@dataclass
class LoadRun:
    """One wrk run of new events against one server."""

    server: str
    test: str
    concurrency: int
    rows: int = 1
    rate: int = 0
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    errors: int = 0
    late_rows: int = 0
    server_cores: float = float("nan")
    wrk_cores: float = float("nan")
    other_cores: float = float("nan")
    failure: str | None = None

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    @property
    def rows_s(self) -> float:
        """Events scored per second."""
        return self.rps * self.rows

    @property
    def cpu_ms_per_row(self) -> float:
        """Server CPU milliseconds per event."""
        if not self.requests or math.isnan(self.server_cores):
            return float("nan")
        return self.server_cores * self.seconds / (self.requests * self.rows) * 1e3

    @property
    def ok(self) -> bool:
        """Finished with no error answer."""
        return self.failure is None and self.errors == 0 and self.requests > 0


def run_wrk(
    server: Server,
    synth: Synthetic,
    *,
    test: str,
    path: str,
    duration: float,
    connections: int,
    threads: int = 1,
    rows: int = 1,
    rate: int = 0,
    script: Path,
) -> LoadRun:
    """One fixed-duration wrk run; the clock moves past every event it sent."""
    run = LoadRun(server.config.label, test, connections, rows, rate)
    first_id, first_us = synth.clock.next_id, synth.clock.next_us
    env = {
        **os.environ,
        "BENCH_ENTITIES": synth.entities_file(threads),
        "BENCH_ROWS": str(rows),
        "BENCH_START_ID": str(first_id),
        "BENCH_START_US": str(first_us),
        "BENCH_STEP_US": str(synth.clock.step_us),
        "BENCH_RATE": f"{rate / threads:g}",
        "BENCH_THREADS": str(threads),
        "BENCH_ID_FIELD": synth.id_field,
        "BENCH_TS_FIELD": synth.ts_field,
    }
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(script),
        server.base + path,
    ]
    cpu_before = server.cpu_seconds()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = busy_seconds()
    own = time.process_time()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=duration + WRK_TIMEOUT_S + 30,
        )
    except subprocess.TimeoutExpired:
        run.failure = "wrk did not finish in time"
        synth.clock.take(10**7)  # unknown how many were sent: skip far ahead
        return run
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() - cpu_before
    wrk_cpu = after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
    others = busy_seconds() - machine - server_cpu - wrk_cpu
    run.server_cores = server_cpu / wall
    run.wrk_cores = wrk_cpu / wall
    run.other_cores = max(0.0, others - (time.process_time() - own)) / wall
    found = _WRK_JSON.search(done.stdout)
    if done.returncode != 0 or found is None:
        run.failure = (
            f"wrk exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}"
        )
        synth.clock.take(10**7)
        return run
    stats = orjson.loads(found.group(1))
    synth.clock.take(int(stats["issued"]) * threads)
    run.requests = int(stats["requests"])
    run.seconds = stats["duration_us"] / 1e6
    run.p50_ms = stats["p50_us"] / 1e3
    run.p99_ms = stats["p99_us"] / 1e3
    run.max_ms = stats["max_us"] / 1e3
    run.errors = sum(
        int(stats[k]) for k in ("non2xx", "connect", "read", "write", "timeout")
    )
    run.late_rows = int(stats["late"])
    return run


@dataclass
class Loader:
    """Runs wrk against one server, sizes and clock fixed; collects the runs."""

    server: Server
    synth: Synthetic
    sizes: Sizes
    script: Path
    runs: list[LoadRun]

    def go(self, test: str, path: str, connections: int, **kw: Any) -> LoadRun:  # noqa: ANN401
        """One measured run, printed as it ends."""
        run = run_wrk(
            self.server,
            self.synth,
            test=test,
            path=path,
            connections=connections,
            duration=self.sizes.duration,
            script=self.script,
            **kw,
        )
        self.runs.append(run)
        note = f" [red]{run.failure}[/red]" if run.failure else ""
        console.print(
            f"    {test} c={run.concurrency}: {run.rps:,.0f} req/s, "
            f"{run.rows_s:,.0f} events/s, p99 {run.p99_ms:.1f} ms{note}"
        )
        return run


def http_section(ctx: Context) -> list[LoadRun]:
    """Sections 1 and 2: single rows on 1 and 2 workers, batches on 2."""
    settings, synth, sizes, logs = ctx.settings, ctx.synth, ctx.sizes, ctx.logs
    quiet_wait = ctx.args.quiet_wait
    console.print(f"  {busy_processes()}")
    script = logs.parent / "events.lua"
    script.write_text(LUA)
    single = f"/v1/{USE_CASE}/predict"
    runs: list[LoadRun] = []
    for workers in (1, 2):
        config = Config("ours", workers, nodelay=True)
        quiet = wait_quiet(quiet_wait) if quiet_wait > 0 else ""
        started = time.perf_counter()
        try:
            with running(config, settings, logs) as server:
                console.print(
                    f"  {config.label}: ready in {time.perf_counter() - started:.1f} s"
                    + (f"; {quiet}" if quiet else "")
                )
                warm = replace(sizes, duration=WARMUP_S)
                Loader(server, synth, warm, script, []).go("warm-up", single, 4)
                load = Loader(server, synth, sizes, script, runs)
                if workers == 1:
                    for c in SINGLE_CONCURRENCY:
                        load.go("single", single, c)
                    continue
                top = load.go("single", single, MAX_CONCURRENCY_2W)
                load.go("paced", single, PACED_CONNECTIONS, rate=PACED_RATE)
                half = int(top.rps / 2 // 50 * 50) if top.ok else 0
                if 0 < half < PACED_RATE:
                    load.go("paced", single, PACED_CONNECTIONS, rate=half)
                load.go(
                    "batch",
                    f"{single}/batch",
                    BATCH_CONNECTIONS,
                    threads=BATCH_CONNECTIONS,
                    rows=BATCH_ROWS,
                )
        except RuntimeError as exc:
            console.print(f"[red]{config.label}: {exc}[/red]")
            runs.append(LoadRun(config.label, "start", 0, failure=str(exc)))
    return runs


# --------------------------------------------------------------------------- #
# Consistency replay (HTTP), in-process replay, Feast
# --------------------------------------------------------------------------- #


@dataclass
class Replay:
    """The replayed events and the labels that become known during the replay."""

    as_of: datetime
    events: list[dict[str, Any]]  # silver rows in time order
    pending: list[dict[str, Any]]  # rows whose labels are posted as they get known


def plan_replay(lake: Lake, use_case: UseCase, days: int) -> Replay:
    """As tests/features/test_realtime.py: the last `days` days are replayed."""
    labels = use_case.labels
    ts = labels.timestamp
    silver = lake.read(labels.table)
    last = pc.max(silver.column(ts)).as_py()
    as_of = datetime.combine(last.date(), datetime.min.time()) - timedelta(
        days=days - 1
    )
    order = [(ts, "ascending"), (labels.id, "ascending")]
    later = silver.filter(pc.field(ts) > as_of).sort_by(order).to_pylist()
    earlier = (
        silver.filter((pc.field(ts) > as_of - labels.delay) & (pc.field(ts) <= as_of))
        .sort_by(order)
        .to_pylist()
    )
    return Replay(as_of, later, earlier + later)


def request_body(use_case: UseCase, row: dict[str, Any]) -> dict[str, Any]:
    """The request of one silver row (JSON-ready)."""
    labels = use_case.labels
    body = {c: row[c] for c in dict.fromkeys([labels.id, *labels.columns])}
    body[labels.timestamp] = row[labels.timestamp].isoformat()
    return body


def known_labels(
    use_case: UseCase, pending: list[dict[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(labels known by `now`, still pending), in order."""
    labels = use_case.labels
    cut = 0
    while cut < len(pending) and pending[cut][labels.timestamp] + labels.delay <= now:
        cut += 1
    return pending[:cut], pending[cut:]


@dataclass
class HttpReplay:
    """The replay through the server."""

    events: int = 0
    labels_applied: int = 0
    late: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def replay_http(
    server: Server, use_case: UseCase, replay: Replay, timeout: float = 30.0
) -> HttpReplay:
    """Each event in time order, one request each; labels as they become known."""
    labels = use_case.labels
    out = HttpReplay()
    pending = list(replay.pending)
    route = f"/v1/{use_case.name}"
    start = time.perf_counter()
    with httpx.Client(base_url=server.base, timeout=timeout) as client:
        for row in replay.events:
            known, pending = known_labels(use_case, pending, row[labels.timestamp])
            if known:
                answer = client.post(
                    f"{route}/labels",
                    json={
                        "labels": [
                            {"event_id": r[labels.id], "label": r[labels.label]}
                            for r in known
                        ]
                    },
                )
                answer.raise_for_status()
                out.labels_applied += int(answer.json()["applied"])
            body = request_body(use_case, row)
            sent = time.perf_counter()
            got = client.post(f"{route}/predict", json=body)
            out.latencies_ms.append((time.perf_counter() - sent) * 1e3)
            got.raise_for_status()
            out.late += bool(got.json()["late"])
            out.events += 1
    out.seconds = time.perf_counter() - start
    return out


class Timers:
    """CPU time (this process, all threads) of chosen calls, summed per label
    within one measured step: other work on the machine does not inflate it,
    and it compares with the server's CPU per request."""

    def __init__(self) -> None:
        self.step: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []
        self._undo: list[Callable[[], None]] = []

    def wrap(
        self,
        owner: Any,  # noqa: ANN401
        name: str,
        label: str,
        count: Callable[[Any, tuple[Any, ...]], tuple[str, float]] | None = None,
    ) -> None:
        """Time `owner.name` (a module function or an instance's method);
        `count(result, args)` names a counter and what to add to it."""
        original = getattr(owner, name)
        had = name in vars(owner)  # a module's function; else a class's method

        def timed(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            start = time.process_time()
            result = original(*args, **kwargs)
            self.step[label] = self.step.get(label, 0.0) + time.process_time() - start
            if count is not None:
                key, value = count(result, args)
                self.step[key] = self.step.get(key, 0.0) + value
            return result

        setattr(owner, name, timed)

        def undo() -> None:
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)

        self._undo.append(undo)

    def add(self, label: str, seconds: float) -> None:
        """Add a measured span to the current step."""
        self.step[label] = self.step.get(label, 0.0) + seconds

    def close_step(self) -> None:
        """End the current step."""
        self.steps.append(self.step)
        self.step = {}

    def restore(self) -> None:
        """Undo every wrap."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def mean(self, label: str, per: int = 1) -> float:
        """Mean of a label over the steps (divided by `per`)."""
        if not self.steps:
            return float("nan")
        return float(np.mean([s.get(label, 0.0) for s in self.steps])) / per


@dataclass
class InProcess:
    """The replay in process (features and state only), and the breakdown."""

    feature_ms: list[float]
    values: pd.DataFrame  # event id + every feature
    single: Timers
    batch: Timers
    views: list[str]
    model_path: str


def load_champion(settings: Settings, use_case: UseCase) -> Predictor:
    """The champion as the server loads it (ONNX single-row path where it wins)."""
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    lake = Lake(settings.tables_dir)
    version = Registry(lake, settings.mlflow_uri).version_of(use_case.name, "champion")
    if version is None:
        raise SystemExit(f"no champion for {use_case.name}")
    model = mlflow.sklearn.load_model(f"models:/{use_case.name}/{version}")
    sample = np.random.default_rng(0).random((256, len(model.features))) * 100
    return load_predictor(use_case.name, version, model, sample=sample)


def stored_events(blob: bytes | str | None) -> int:
    """Events held in one state blob (its header's count)."""
    if not isinstance(blob, bytes) or not blob:
        return 0
    return int(BLOB_HEAD.unpack_from(blob, 0)[1])


def _instrument(timers: Timers, state: EventState, predictor: Predictor) -> None:
    """Time the aggregation views, the state reads (and events read), the model."""
    timers.wrap(serving_mod, "online_features", "views")
    timers.wrap(
        state,
        "read_blobs",
        "state read",
        count=lambda result, args: (
            f"events:{args[0]}",
            float(sum(stored_events(blob) for _, blob in result)),
        ),
    )
    timers.wrap(predictor, "score", "model")


def _timed_call(
    timers: Timers,
    use_case: UseCase,
    *,
    store: Any,  # noqa: ANN401
    state: EventState,
    predictor: Predictor,
    payloads: list[dict[str, Any]],
) -> Any:  # noqa: ANN401
    """Features, model, state update (as the server), each phase timed (CPU);
    the wall time of features + state update under "wall"."""
    w0, t0 = time.perf_counter(), time.process_time()
    found = request_features(use_case, store, state, payloads)
    w1, t1 = time.perf_counter(), time.process_time()
    predict(use_case, predictor, found)
    w2, t2 = time.perf_counter(), time.process_time()
    commit_features(use_case, state, found)
    w3, t3 = time.perf_counter(), time.process_time()
    timers.add("features", t1 - t0)
    timers.add("predict", t2 - t1)
    timers.add("commit", t3 - t2)
    timers.add("wall", w1 - w0 + w3 - w2)
    timers.close_step()
    return found


def replay_in_process(ctx: Context, replay: Replay, folder: Path) -> InProcess:
    """The same replay on a fresh state (same bootstrap), timed; then batches."""
    settings, use_case, synth = ctx.settings, ctx.use_case, ctx.synth
    batches = ctx.sizes.batch_probe
    lake = Lake(settings.tables_dir)
    url = f"sqlite:///{folder / 'online.db'}"
    state = open_event_state(url, settings.workspace, use_case.name)
    store = open_store(url, settings.workspace, use_case.name)
    for view in use_case.aggregation_views:
        bootstrap(lake, state, use_case, view, as_of=replay.as_of)
    predictor = load_champion(settings, use_case)
    serving = use_case.serving
    assert serving is not None
    labels = use_case.labels
    names = use_case.feature_names
    single, batch = Timers(), Timers()
    pending = list(replay.pending)
    feature_ms: list[float] = []
    values: dict[str, list[Any]] = {"event_id": [], **{n: [] for n in names}}
    _instrument(single, state, predictor)
    try:
        for row in replay.events:
            known, pending = known_labels(use_case, pending, row[labels.timestamp])
            if known:
                apply_labels(
                    state,
                    use_case,
                    [(r[labels.id], float(r[labels.label])) for r in known],
                )
            payload = serving.request.model_validate(
                request_body(use_case, row)
            ).model_dump()
            found = _timed_call(
                single,
                use_case,
                store=store,
                state=state,
                predictor=predictor,
                payloads=[payload],
            )
            feature_ms.append(single.steps[-1]["wall"] * 1e3)
            values["event_id"].append(str(row[labels.id]))
            for n in names:
                values[n].append(float(found.values[n][0]))
    finally:
        single.restore()
    _instrument(batch, state, predictor)
    try:
        for _ in range(batches):
            payloads = [
                serving.request.model_validate(p).model_dump()
                for p in synth.payloads(BATCH_ROWS)
            ]
            _timed_call(
                batch,
                use_case,
                store=store,
                state=state,
                predictor=predictor,
                payloads=payloads,
            )
    finally:
        batch.restore()
    return InProcess(
        feature_ms,
        pd.DataFrame(values),
        single,
        batch,
        [v.name for v in use_case.aggregation_views],
        f"single row {predictor.single}, batch {predictor.batch}",
    )


def gold_truth(lake: Lake, use_case: UseCase, ids: list[int]) -> pd.DataFrame:
    """Offline values of the replayed events: their gold rows (one per event)."""
    labels = use_case.labels
    wanted = pa.array(ids, pa.int64())
    frame: pd.DataFrame | None = None
    for view in use_case.aggregation_views:
        gold = lake.read(
            use_case.gold_table(view), columns=[labels.id, *view.feature_names]
        )
        part = gold.filter(pc.is_in(gold.column(labels.id), wanted)).to_pandas()
        frame = part if frame is None else frame.merge(part, on=labels.id, how="outer")
    assert frame is not None
    frame["event_id"] = frame[labels.id].astype(str)
    return frame.drop(columns=[labels.id])


@dataclass(frozen=True)
class Agreement:
    """One feature, served against offline."""

    compared: int
    mismatch_rate: float
    missing_rate: float
    max_abs_diff: float


def agreement(served: np.ndarray, truth: np.ndarray) -> Agreement:
    """As check_consistency: differ beyond REL_TOL, or one side missing."""
    n = len(served)
    if n == 0:
        return Agreement(0, float("nan"), float("nan"), float("nan"))
    s_nan, t_nan = np.isnan(served), np.isnan(truth)
    one_missing = s_nan != t_nan
    both = ~s_nan & ~t_nan
    diff = np.abs(served[both] - truth[both])
    scale = np.maximum(np.abs(served[both]), np.abs(truth[both]))
    differ = diff > np.maximum(REL_TOL * scale, 1e-12)
    return Agreement(
        n,
        float((differ.sum() + one_missing.sum()) / n),
        float(one_missing.sum() / n),
        float(diff.max()) if diff.size else 0.0,
    )


def against(
    served: pd.DataFrame, truth: pd.DataFrame, names: list[str]
) -> dict[str, Agreement]:
    """Per feature, `served` (event_id + features) against `truth`."""
    joined = served.merge(truth, on="event_id", suffixes=("", "_truth"))
    return {
        n: agreement(
            joined[n].to_numpy(dtype=float), joined[f"{n}_truth"].to_numpy(dtype=float)
        )
        for n in names
    }


def export_for_feast(
    lake: Lake, use_case: UseCase, replay: Replay, folder: Path
) -> Path:
    """Gold views and the replayed requests as Parquet, and the worker's spec."""
    utc = pa.timestamp("us", tz="UTC")
    labels = use_case.labels
    views = []
    for view in use_case.aggregation_views:
        table = lake.read(
            use_case.gold_table(view),
            columns=[view.entity, EVENT_TIME, *view.feature_names, WRITTEN_AT],
        )
        table = table.set_column(1, EVENT_TIME, table.column(EVENT_TIME).cast(utc))
        table = table.set_column(
            table.num_columns - 1, WRITTEN_AT, table.column(WRITTEN_AT).cast(utc)
        )
        path = folder / f"gold_{view.name}.parquet"
        pq.write_table(table, path)
        views.append(
            {
                "name": view.name,
                "entity": view.entity,
                "ttl_seconds": view.retention.total_seconds(),
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
    entities = list(dict.fromkeys(v.entity for v in use_case.aggregation_views))
    requests = pa.table(
        {
            "transaction_id": pa.array(
                [r[labels.id] for r in replay.events], pa.int64()
            ),
            **{
                e: pa.array([r[e] for r in replay.events], pa.int64()) for e in entities
            },
            "event_time": pa.array(
                [r[labels.timestamp] for r in replay.events], pa.timestamp("us")
            ).cast(utc),
        }
    )
    requests_path = folder / "requests.parquet"
    pq.write_table(requests, requests_path)
    last = replay.events[-1][labels.timestamp]

    def every(step: timedelta) -> list[str]:
        times, t = [], replay.as_of + step
        while t <= last:
            times.append(t.isoformat())
            t += step
        return times

    span = max(v.span for v in use_case.aggregation_views)
    spec = {
        "views": views,
        "requests": str(requests_path),
        "as_of": replay.as_of.isoformat(),
        "history_start": (replay.as_of - span - timedelta(days=1)).isoformat(),
        "plans": [
            {"name": "once", "refresh": []},
            {"name": "daily", "refresh": every(timedelta(days=1))},
            {"name": "hourly", "refresh": every(timedelta(hours=1))},
        ],
    }
    path = folder / "feast_spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


@dataclass
class FeastResult:
    """What the Feast worker reported and served, or why not."""

    report: dict[str, Any] = field(default_factory=dict)
    values: pd.DataFrame | None = None
    failure: str | None = None
    seconds: float = 0.0


def run_feast(spec: Path, folder: Path, skip: bool, timeout: float) -> FeastResult:
    """The worker in the Feast venv (created on first use, as bench/training_set)."""
    if skip:
        return FeastResult(failure="skipped (--skip-feast)")
    python = feast_python(FEAST_VERSION)
    if python is None:
        return FeastResult(failure="the Feast venv could not be set up")
    out = folder / "feast_values.parquet"
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(python), str(FEAST_WORKER), str(spec), str(out)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return FeastResult(failure=f"did not finish in {timeout:.0f} s")
    seconds = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        return FeastResult(failure=f"exit {done.returncode}:\n{tail}", seconds=seconds)
    return FeastResult(json.loads(lines[-1]), pd.read_parquet(out), seconds=seconds)


@dataclass
class ConsistencyResult:
    """Section 3."""

    replay: Replay
    http: HttpReplay
    report_frame: pd.DataFrame
    compared: int
    logged: int
    ours_vs_gold: dict[str, Agreement]
    inproc: InProcess
    inproc_vs_served: int  # values differing between the two replays of ours
    inproc_vs_gold: dict[str, Agreement]
    feast: FeastResult
    feast_vs_gold: dict[str, dict[str, Agreement]]
    materialize_s: float
    server_label: str


def consistency_section(ctx: Context) -> ConsistencyResult:
    """Section 3, and the in-process breakdown that explains sections 1 and 2."""
    settings, use_case, sizes = ctx.settings, ctx.use_case, ctx.sizes
    tmp, logs, args = ctx.tmp, ctx.logs, ctx.args
    lake = Lake(settings.tables_dir)
    replay = plan_replay(lake, use_case, sizes.replay_days)
    labels = use_case.labels
    console.print(
        f"replay: {len(replay.events):,} events after {replay.as_of} "
        f"({sizes.replay_days} days), labels of {len(replay.pending):,} events "
        "posted as they become known"
    )
    start = time.perf_counter()
    aistack(
        [
            "materialize",
            USE_CASE,
            "--as-of",
            replay.as_of.isoformat(),
            "-w",
            str(settings.workspace),
        ]
    )
    materialize_s = time.perf_counter() - start
    config = Config("ours", 2, nodelay=True)
    with running(config, settings, logs) as server:
        http = replay_http(server, use_case, replay)
    console.print(
        f"  through {config.label}: {http.events:,} events in {http.seconds:.1f} s, "
        f"{http.labels_applied:,} labels applied, {http.late} late"
    )
    report = check_consistency(lake, use_case)
    frame = report.frame()
    log = lake.read(prediction_log_table(use_case)).to_pandas()
    names = use_case.feature_names
    view_names = [f for v in use_case.aggregation_views for f in v.feature_names]
    served = log[["event_id", *[FEATURE_PREFIX + n for n in names]]].rename(
        columns={FEATURE_PREFIX + n: n for n in names}
    )
    truth = gold_truth(lake, use_case, [int(r[labels.id]) for r in replay.events])
    ours_vs_gold = against(served, truth, view_names)

    console.print("  in process (features and state only, no HTTP) ...")
    inproc_dir = tmp / "inproc"
    inproc_dir.mkdir()
    inproc = replay_in_process(ctx, replay, inproc_dir)
    same = inproc.values.merge(served, on="event_id", suffixes=("", "_served"))
    differ = 0
    for n in names:
        a = same[n].to_numpy(dtype=float)
        b = same[f"{n}_served"].to_numpy(dtype=float)
        differ += int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())
    inproc_vs_gold = against(inproc.values, truth, view_names)

    console.print("  Feast (its own venv) ...")
    feast_dir = tmp / "feast"
    feast_dir.mkdir()
    spec = export_for_feast(lake, use_case, replay, feast_dir)
    feast = run_feast(spec, feast_dir, args.skip_feast, args.feast_timeout)
    feast_vs_gold: dict[str, dict[str, Agreement]] = {}
    if feast.values is not None:
        values = feast.values.copy()
        values["event_id"] = values["transaction_id"].astype(str)
        for plan, part in values.groupby("plan", sort=False):
            cols = ["event_id", *view_names]
            feast_vs_gold[str(plan)] = against(part[cols], truth, view_names)
    else:
        console.print(f"  [yellow]Feast: {feast.failure}[/yellow]")
    return ConsistencyResult(
        replay,
        http,
        frame,
        report.compared,
        report.logged,
        ours_vs_gold,
        inproc,
        differ,
        inproc_vs_gold,
        feast,
        feast_vs_gold,
        materialize_s,
        config.label,
    )


# --------------------------------------------------------------------------- #
# Stream (Redis Streams -> consumers -> Delta log + output stream)
# --------------------------------------------------------------------------- #


@dataclass
class StreamRun:
    """One phase of the stream section."""

    name: str
    pushed: int = 0
    offered_rate: float = 0.0
    published: int = 0
    seconds: float = 0.0  # first to last output of the phase
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    commit_p50_ms: float = float("nan")  # event -> its log commit
    commit_p99_ms: float = float("nan")
    max_lag: int = 0
    end_lag: int = 0
    late: int = 0
    consumer_cores: float = float("nan")  # consumers' CPU s per wall s
    driver_cores: float = float("nan")  # this process (pushing, reading outputs)
    redis_cores: float = float("nan")  # the redis-server

    @property
    def rate(self) -> float:
        """Events published per second."""
        return self.published / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class StreamResult:
    """Section 4."""

    available: bool
    note: str = ""
    consumers: int = 0
    linger_ms: int = 0
    commit_interval_ms: int = 0
    day_events: float = 0.0  # events of one day at the bench's clock
    runs: list[StreamRun] = field(default_factory=list)
    logged: int = 0
    logged_distinct: int = 0
    pushed_total: int = 0
    published_total: int = 0  # output messages (each one acknowledged input)
    failure: str | None = None


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, int]]:
    """A private redis-server on 127.0.0.1 without persistence: URL, pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed (apt-get install redis-server)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class StreamDriver:
    """Pushes new events into the input stream; reads the output stream."""

    def __init__(
        self,
        url: str,
        names: list[dict[str, str]],
        synth: Synthetic,
        route: Callable[[dict[str, Any]], int],
    ) -> None:
        self.client = redis.Redis.from_url(url)
        self.names = names[0]
        self.partitions = names  # one input stream per partition
        self.route = route  # payload -> partition
        self.synth = synth
        self.enqueued_ms: dict[str, int] = {}
        self.out_cursor = "-"
        self.outputs: dict[str, tuple[int, bool]] = {}  # event id -> (ms, late)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_pid = 0
        self.log_dir: Path | None = None  # the Delta prediction log's folder

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds used by the consumer processes, this one, redis-server."""

        def used(pid: int) -> float:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                return times.user + times.system
            return 0.0

        return (
            sum(used(p.pid) for p in self.procs),
            time.process_time(),
            used(self.redis_pid),
        )

    def share(
        self, run: StreamRun, before: tuple[float, float, float], wall: float
    ) -> None:
        """Cores used since `before` (`cpu()`), over `wall` seconds."""
        after = self.cpu()
        run.consumer_cores, run.driver_cores, run.redis_cores = (
            (b - a) / wall for a, b in zip(before, after, strict=True)
        )

    def push(self, n: int) -> None:
        """XADD `n` new events, pipelined."""
        payloads = self.synth.payloads(n)
        pipe = self.client.pipeline(transaction=False)
        for p in payloads:
            stream = self.partitions[self.route(p)]["events"]
            pipe.xadd(stream, {"kind": "event", "data": orjson.dumps(p)})
        ids = pipe.execute()
        for p, ident in zip(payloads, ids, strict=True):
            key = ident.decode() if isinstance(ident, bytes) else str(ident)
            self.enqueued_ms[str(p[self.synth.id_field])] = int(key.split("-")[0])

    def collect(self) -> int:
        """Read new output messages; how many there are in all."""
        while True:
            start = self.out_cursor if self.out_cursor == "-" else f"({self.out_cursor}"
            found: Any = self.client.xrange(
                self.names["predictions"], min=start, count=10_000
            )
            if not found:
                return len(self.outputs)
            for ident, fields in found:
                key = ident.decode()
                data = orjson.loads(fields[b"data"])
                self.outputs[str(data["event_id"])] = (
                    int(key.split("-")[0]),
                    bool(data.get("late")),
                )
                self.out_cursor = key

    def lag(self) -> int:
        """Undelivered plus delivered-but-unacknowledged messages of the group."""
        total = 0
        for names in self.partitions:
            for group in self.client.xinfo_groups(names["events"]):
                if group["name"].decode() == names["group"]:
                    total += int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return total

    def wait_for(self, total: int, timeout: float) -> bool:
        """Until `total` outputs exist (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.collect() < total:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def measure(self, run: StreamRun, ids: list[str]) -> None:
        """Latency and throughput of the events `ids` (pushed in this phase)."""
        got = [(self.outputs[i], self.enqueued_ms[i]) for i in ids if i in self.outputs]
        run.published = len(got)
        if not got:
            return
        lat = np.array([out[0] - enq for out, enq in got], dtype=float)
        outs = np.array([out[0] for out, _ in got], dtype=float)
        first_in = min(enq for _, enq in got)
        run.seconds = (outs.max() - first_in) / 1e3
        run.p50_ms = float(np.percentile(lat, 50))
        run.p99_ms = float(np.percentile(lat, 99))
        run.max_ms = float(lat.max())
        run.late = sum(out[1] for out, _ in got)
        if self.log_dir is None:
            return
        deadline = time.monotonic() + 30  # until the last events are committed
        while self.lag() and time.monotonic() < deadline:
            time.sleep(0.1)
        committed = commit_times(self.log_dir, first_in - 1000)
        waits = [committed[i] - self.enqueued_ms[i] for i in ids if i in committed]
        if waits:
            run.commit_p50_ms = float(np.percentile(waits, 50))
            run.commit_p99_ms = float(np.percentile(waits, 99))


def commit_times(table: Path, since_ms: int) -> dict[str, int]:
    """Event id -> when its prediction was committed to the Delta log (the
    `commitInfo` timestamp of the version that added its row's file, ms), for
    the commits since `since_ms`."""
    out: dict[str, int] = {}
    for entry in sorted((table / "_delta_log").glob("*.json")):
        when, added = 0, []
        for line in entry.read_bytes().splitlines():
            action = orjson.loads(line)
            if "commitInfo" in action:
                when = int(action["commitInfo"].get("timestamp", 0))
            elif "add" in action and action["add"].get("dataChange", True):
                added.append(unquote(action["add"]["path"]))  # not a compaction
        if when < since_ms:
            continue
        for path in added:
            rows = pq.read_table(table / path, columns=["event_id"])
            for ident in rows.column("event_id").to_pylist():
                out.setdefault(str(ident), when)
    return out


def start_consumers(
    ctx: Context, url: str, count: int
) -> list[subprocess.Popen[bytes]]:
    """`aistack stream` processes of one consumer group (own sessions), one
    per partition."""
    env = {
        **os.environ,
        "AISTACK_STREAM_URL": url,
        "PYTHONUNBUFFERED": "1",
        "AISTACK_STREAM_PARTITIONS": str(count),
    }
    procs = []
    for k in range(count):
        with (ctx.logs / f"stream_consumer_{k}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "aistack",
                        "stream",
                        ctx.use_case.name,
                        "--consumer",
                        f"bench-{k}",
                        "--batch",
                        str(STREAM_BATCH),
                        "--partition",
                        str(k),
                        "--linger-ms",
                        str(ctx.args.stream_linger_ms),
                        "--commit-interval-ms",
                        str(ctx.args.stream_commit_interval_ms),
                        "-w",
                        str(ctx.settings.workspace),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
    return procs


def _check_alive(procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    for k, p in enumerate(procs):
        if p.poll() is not None:
            tail = (logs / f"stream_consumer_{k}.log").read_text(errors="replace")
            raise RuntimeError(f"consumer {k} exited:\n{tail[-2000:]}")


def stream_capacity(
    driver: StreamDriver, n: int, done_before: int, alive: Callable[[], None]
) -> StreamRun:
    """Push `n` events at once; the consumers drain the backlog."""
    first = driver.synth.clock.next_id
    cpu, wall = driver.cpu(), time.perf_counter()
    driver.push(n)
    run = StreamRun("capacity (backlog drained)", n)
    deadline = time.monotonic() + 120
    while not driver.wait_for(done_before + n, 0.2):
        alive()
        run.max_lag = max(run.max_lag, driver.lag())
        if time.monotonic() > deadline:
            break
    driver.share(run, cpu, time.perf_counter() - wall)
    driver.measure(run, [str(first + i) for i in range(n)])
    run.end_lag = driver.lag()
    return run


def stream_sustained(
    driver: StreamDriver, rate: float, seconds: float, alive: Callable[[], None]
) -> StreamRun:
    """Push at `rate` events/s for `seconds` (open loop), then let it drain."""
    run = StreamRun(f"sustained {seconds:g} s", offered_rate=rate)
    first = driver.synth.clock.next_id
    cpu = driver.cpu()
    began = time.perf_counter()
    next_check = began + 1
    while (now := time.perf_counter()) - began < seconds:
        due = int((now - began) * rate) - run.pushed
        if due > 0:
            driver.push(due)
            run.pushed += due
        if now >= next_check:
            run.max_lag = max(run.max_lag, driver.lag())
            next_check = now + 1
            alive()
        time.sleep(0.005)
    run.end_lag = driver.lag()
    driver.share(run, cpu, time.perf_counter() - began)
    driver.wait_for(len(driver.enqueued_ms), 60)
    driver.measure(run, [str(first + i) for i in range(run.pushed)])
    return run


def stream_logged(ctx: Context) -> list[str]:
    """Stream ids of the prediction log's rows written by consumers."""
    log = Lake(ctx.settings.tables_dir).read(
        prediction_log_table(ctx.use_case), columns=["route", "stream_id"]
    )
    routes = log.column("route").to_pylist()
    ids = log.column("stream_id").to_pylist()
    return [i for r, i in zip(routes, ids, strict=True) if r.startswith("stream:")]


def stream_section(ctx: Context) -> StreamResult:
    """Section 4, when the platform has a stream module."""
    module = Path(serving_mod.__file__).with_name("stream.py")
    if not module.exists():
        return StreamResult(False, note=f"{module} does not exist: no stream section")
    from aistack.serving.stream import (  # noqa: PLC0415
        partition_key,
        partition_of,
        stream_names,
    )

    consumers = ctx.args.stream_consumers
    result = StreamResult(
        True,
        consumers=consumers,
        linger_ms=ctx.args.stream_linger_ms,
        commit_interval_ms=ctx.args.stream_commit_interval_ms,
        day_events=86_400e6 / ctx.synth.clock.step_us,
    )
    folder = ctx.tmp / "redis"
    folder.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with redis_server(folder) as (url, redis_pid):
            name = ctx.use_case.name
            key = partition_key(ctx.use_case)
            driver = StreamDriver(
                url,
                [stream_names(name, p, consumers) for p in range(consumers)],
                ctx.synth,
                lambda p: partition_of(p[key], consumers),
            )
            procs = start_consumers(ctx, url, consumers)
            driver.procs = procs
            driver.redis_pid = redis_pid
            driver.log_dir = Lake(ctx.settings.tables_dir).path(
                prediction_log_table(ctx.use_case)
            )

            def alive() -> None:
                _check_alive(procs, ctx.logs)

            warm = 50 * consumers  # each consumer loads the champion on a first batch
            driver.push(warm)
            started = time.monotonic()
            while not driver.wait_for(warm, 2):
                alive()
                if time.monotonic() - started > 180:
                    raise RuntimeError("the consumers scored nothing in 180 s")
            time.sleep(1)
            probe = stream_capacity(driver, ctx.sizes.stream_probe, warm, alive)
            result.runs.append(probe)
            console.print(
                f"  capacity: {probe.rate:,.0f} events/s "
                f"({probe.published:,} of {probe.pushed:,})"
            )
            rate = ctx.args.stream_rate or probe.rate * STREAM_SHARE
            rate = max(50.0, round(rate / 50) * 50) if math.isfinite(rate) else 500.0
            sustained = stream_sustained(driver, rate, ctx.sizes.stream_seconds, alive)
            result.runs.append(sustained)
            console.print(
                f"  sustained at {rate:,.0f}/s: {sustained.rate:,.0f} events/s, "
                f"p99 {sustained.p99_ms:,.0f} ms"
            )
            for p in procs:
                _stop(p)
            procs = []
            result.pushed_total = len(driver.enqueued_ms)
            result.published_total = driver.collect()
            streamed = stream_logged(ctx)
            result.logged = len(streamed)
            result.logged_distinct = len(set(streamed))
    except RuntimeError as exc:
        result.failure = str(exc)
        console.print(f"[red]stream: {exc}[/red]")
    finally:
        for p in procs:
            _stop(p)
    return result


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _num(value: float, fmt: str = ",.0f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def _diff(value: float, fmt: str) -> str:
    """A difference of two measurements; below zero it is noise."""
    return "~0 (noise)" if value < 0 else _num(value, fmt)


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]n/a[/yellow]"
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def http_table(runs: list[LoadRun], duration: float) -> Table:
    """Sections 1 and 2."""
    table = Table(
        title=f"1-2. HTTP scoring of new events, state update included (wrk, "
        f"keep-alive, {duration:g} s per run, loopback, 2 cores shared with wrk)"
    )
    for name in (
        "server",
        "test",
        "conn",
        "req/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "srv CPU",
        "CPU ms/event",
        "wrk CPU",
        "other CPU",
        "late rows",
        "errors",
    ):
        text = name in ("server", "test")
        table.add_column(name, justify="left" if text else "right", no_wrap=text)
    for r in runs:
        test = {
            "single": "1 row, max",
            "batch": f"{r.rows:,} rows, max",
            "paced": f"1 row, paced {r.rate:,}/s",
        }.get(r.test, r.test)
        table.add_row(
            r.server,
            test,
            str(r.concurrency),
            _num(r.rps),
            _num(r.rows_s),
            _num(r.p50_ms, ".2f"),
            _num(r.p99_ms, ".2f"),
            _num(r.max_ms, ".0f"),
            _num(r.server_cores, ".2f"),
            _num(r.cpu_ms_per_row, ".3f"),
            _num(r.wrk_cores, ".2f"),
            _num(r.other_cores, ".2f"),
            f"{r.late_rows:,}",
            "FAILED" if r.failure else f"{r.errors:,}",
        )
    return table


def breakdown_table(inproc: InProcess, runs: list[LoadRun]) -> Table:
    """Where a request's time goes: in process by phase, and the server's rest."""
    table = Table(
        title="Where the time goes (in process, same code as the server; CPU time "
        "per phase, mean per event)"
    )
    table.add_column("phase")
    table.add_column("single row (replay) µs", justify="right")
    table.add_column("in a 1,000-row batch µs/row", justify="right")
    s, b = inproc.single, inproc.batch
    rows = BATCH_ROWS

    def both(label: str) -> tuple[float, float]:
        return s.mean(label) * 1e6, b.mean(label, rows) * 1e6

    feat, feat_b = both("features")
    views, views_b = both("views")
    read, read_b = both("state read")
    model, model_b = both("model")
    pred, pred_b = both("predict")
    commit, commit_b = both("commit")
    lines = [
        ("request-time features (polars) + glue", feat - views, feat_b - views_b),
        ("state read (SQLite: the entities' blobs)", read, read_b),
        ("decode + window aggregation", views - read, views_b - read_b),
        ("model score", model, model_b),
        ("answer objects (Scored)", pred - model, pred_b - model_b),
        ("state write + label index", commit, commit_b),
    ]
    total, total_b = feat + pred + commit, feat_b + pred_b + commit_b
    for name, a, c in lines:
        table.add_row(name, _num(a, ",.0f"), _num(c, ",.1f"))
    table.add_row("[bold]total in process[/bold]", _num(total), _num(total_b, ",.1f"))
    one = [r for r in runs if r.test == "single" and r.server.startswith("ours w=1")]
    best = max((r for r in one if r.ok), key=lambda r: r.rps, default=None)
    batch = next((r for r in runs if r.test == "batch" and r.ok), None)
    srv = best.cpu_ms_per_row * 1e3 if best else float("nan")
    srv_b = batch.cpu_ms_per_row * 1e3 if batch else float("nan")
    table.add_row(
        "server CPU per event in the HTTP run (1 row: w=1 max; batch: w=2)",
        _num(srv),
        _num(srv_b, ",.1f"),
    )
    table.add_row(
        "-> HTTP, validation, JSON, prediction log, metrics, threads (difference)",
        _diff(srv - total, ",.0f"),
        _diff(srv_b - total_b, ",.1f"),
    )
    for view in inproc.views:
        table.add_row(
            f"events read from the state per event: {view}",
            _num(inproc.single.mean(f"events:{view}"), ".1f"),
            _num(inproc.batch.mean(f"events:{view}", rows), ".1f"),
        )
    return table


def consistency_table(res: ConsistencyResult, use_case: UseCase) -> Table:
    """Section 3, per feature."""
    plans = list(res.feast_vs_gold)
    table = Table(
        title=f"3. Online/offline consistency: {res.http.events:,} replayed events "
        f"({res.replay.as_of:%Y-%m-%d} on); mismatch = differs beyond rel. "
        f"{REL_TOL:g} or one side missing"
    )
    table.add_column("feature")
    table.add_column(
        "ours: check_consistency\nmismatch / missing (max |diff|)", justify="right"
    )
    table.add_column("ours served\nvs gold: mismatch", justify="right")
    for plan in plans:
        table.add_column(
            f"Feast, {_plan_label(plan)}\nmismatch / missing (max |diff|)",
            justify="right",
        )
    found: dict[str, dict[str, Any]] = {
        str(r["feature"]): {str(k): v for k, v in r.items()}
        for r in res.report_frame.to_dict("records")
    }
    for name in use_case.feature_names:
        row = found.get(name)
        cells = [
            name,
            "-"
            if row is None
            else f"{row['mismatch_rate']:.2%} / {row['missing_rate']:.2%} "
            f"({_num(float(row['max_abs_diff']), '.3g')})",
        ]
        gold = res.ours_vs_gold.get(name)
        cells.append("request-time" if gold is None else f"{gold.mismatch_rate:.2%}")
        for plan in plans:
            a = res.feast_vs_gold[plan].get(name)
            cells.append(
                "n/a (request-time)"
                if a is None
                else f"{a.mismatch_rate:.1%} / {a.missing_rate:.1%} "
                f"({_num(a.max_abs_diff, '.3g')})"
            )
        table.add_row(*cells)
    return table


def _plan_label(plan: str) -> str:
    return {
        "once": "materialized once",
        "daily": "re-materialized daily",
        "hourly": "re-materialized hourly",
    }.get(plan, plan)


def latency_table(res: ConsistencyResult) -> Table:
    """Per-event latency of the replay: ours (HTTP, in process) and Feast's."""
    table = Table(title="3b. Per-event latency during the replay (one event at a time)")
    for name in ("path", "calls", "p50 ms", "p99 ms", "mean ms", "what it includes"):
        table.add_column(
            name, justify="left" if name in ("path", "what it includes") else "right"
        )
    lat = np.array(res.http.latencies_ms)
    table.add_row(
        f"ours, HTTP ({res.server_label})",
        f"{len(lat):,}",
        _num(float(np.percentile(lat, 50)), ".2f"),
        _num(float(np.percentile(lat, 99)), ".2f"),
        _num(float(lat.mean()), ".2f"),
        "client-measured POST /predict: features from the state, model, state "
        "update, prediction log",
    )
    f = np.array(res.inproc.feature_ms)
    table.add_row(
        "ours, in process",
        f"{len(f):,}",
        _num(float(np.percentile(f, 50)), ".3f"),
        _num(float(np.percentile(f, 99)), ".3f"),
        _num(float(f.mean()), ".3f"),
        "request_features + commit_features: state read, windows, request-time "
        "features, state write (no model, no HTTP)",
    )
    for plan in res.feast.report.get("plans", []):
        refresh = (
            f"; {plan['refreshes']} materialize_incremental, "
            f"{plan['refresh_mean_seconds']:.2f} s each"
            if plan["refreshes"]
            else ""
        )
        table.add_row(
            f"Feast {res.feast.report.get('feast', '')}, {_plan_label(plan['plan'])}",
            f"{plan['calls']:,}",
            _num(plan["p50_ms"], ".3f"),
            _num(plan["p99_ms"], ".3f"),
            _num(plan["mean_ms"], ".3f"),
            "get_online_features (both views, SQLite online store), read only; "
            f"first materialize {plan['first_materialize_seconds']:.1f} s{refresh}",
        )
    return table


def stream_table(res: StreamResult) -> Table:
    """Section 4."""
    table = Table(
        title=f"4. Stream: Redis Streams -> {res.consumers} `aistack stream` "
        f"consumers (micro-batch <= {STREAM_BATCH}, linger {res.linger_ms} ms, "
        f"commit interval {res.commit_interval_ms} ms) -> output stream, Delta "
        "prediction log + XACK"
    )
    for name in (
        "phase",
        "pushed",
        "offered /s",
        "scored+acked",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "commit p50 ms",
        "commit p99 ms",
        "max lag",
        "lag at end",
        "late",
        "consumers CPU",
        "driver CPU",
        "redis CPU",
    ):
        table.add_column(name, justify="left" if name == "phase" else "right")
    for r in res.runs:
        table.add_row(
            r.name,
            f"{r.pushed:,}",
            "as fast as pushed" if not r.offered_rate else f"{r.offered_rate:,.0f}",
            f"{r.published:,}",
            _num(r.rate),
            _num(r.p50_ms),
            _num(r.p99_ms),
            _num(r.max_ms),
            _num(r.commit_p50_ms),
            _num(r.commit_p99_ms),
            f"{r.max_lag:,}",
            f"{r.end_lag:,}",
            f"{r.late:,}",
            _num(r.consumer_cores, ".2f"),
            _num(r.driver_cores, ".2f"),
            _num(r.redis_cores, ".2f"),
        )
    return table


def targets_table(runs: list[LoadRun], res: ConsistencyResult | None) -> Table:
    """The issue's targets."""
    table = Table(title="Targets (2 cores; every request a new event, state updated)")
    for name in ("target", "measured", "goal", "verdict"):
        table.add_column(name)
    one = [r for r in runs if r.server.startswith("ours w=1") and r.test == "single"]
    best = max((r for r in one if r.ok), key=lambda r: r.rps, default=None)
    table.add_row(
        "single-row requests/s, 1 worker",
        "-" if best is None else f"{best.rps:,.0f} (c={best.concurrency})",
        f">= {TARGET_RPS:,}",
        _verdict(None if best is None else best.rps >= TARGET_RPS),
    )
    paced = next((r for r in runs if r.test == "paced" and r.rate == PACED_RATE), None)
    floor = TARGET_PACED_SHARE * PACED_RATE
    if paced is None or not paced.requests:
        table.add_row(
            f"p99 at {PACED_RATE:,} req/s, 2 workers", "-", "", _verdict(None)
        )
    else:
        held = paced.errors == 0 and paced.rps >= floor
        table.add_row(
            f"p99 at {PACED_RATE:,} req/s, 2 workers",
            f"{paced.p99_ms:,.2f} ms at {paced.rps:,.0f} req/s achieved, "
            f"{paced.errors} errors",
            f"< {TARGET_P99_MS:g} ms, at >= {floor:,.0f} req/s",
            _verdict(held and paced.p99_ms < TARGET_P99_MS),
        )
    batch = next((r for r in runs if r.test == "batch"), None)
    table.add_row(
        f"rows/s, batch route ({BATCH_ROWS:,}-row requests), 2 workers",
        "-" if batch is None or not batch.ok else f"{batch.rows_s:,.0f}",
        f">= {TARGET_ROWS_S:,}",
        _verdict(
            None if batch is None or not batch.ok else batch.rows_s >= TARGET_ROWS_S
        ),
    )
    if res is not None:
        frame = res.report_frame
        worst = float(frame["mismatch_rate"].max()) if len(frame) else float("nan")
        table.add_row(
            "replay: served = offline (every feature)",
            f"max mismatch {worst:.2%} over {res.compared:,} events",
            "0",
            _verdict(worst == 0 and res.compared == res.http.events),
        )
    return table


def print_notes(
    res: ConsistencyResult | None,
    stream: StreamResult | None,
    synth: Synthetic,
    how: str,
) -> None:
    """How to read the tables."""
    step_s = synth.clock.step_us / 1e6
    console.print(
        f"Workspace {how}. New events: ids from {FIRST_SYNTHETIC_ID:,}, times from "
        f"an hour after the simulation's last event, {step_s:,.0f} s apart (its "
        "mean gap), so entities hold as many events as in the simulation; "
        "(customer, terminal, amount) of real silver rows. 'late rows': answers "
        "naming a view whose entity already had a later event (concurrent "
        "requests of one entity overtaking each other: the later one was scored "
        "without the earlier one)."
    )
    console.print(
        "CPU columns: cores used during the run by the server's processes, by wrk, "
        "and by every other process on the machine ('other CPU' > 0.1: someone "
        "else's work competed with the run; the in-process breakdown is CPU time, "
        "so it is not inflated by such work, wall-clock figures are)."
    )
    console.print(
        "Paced runs: wrk holds "
        f"{PACED_CONNECTIONS} connections and sends on a fixed schedule (Lua delay()); "
        "latency is from the request's send, so when the server falls behind the "
        "achieved rate drops below the offered one (and the wait for a free "
        "connection is not in the percentiles)."
    )
    if res is not None:
        console.print(
            f"Replay: state bootstrapped as of {res.replay.as_of} with `aistack "
            f"materialize --as-of` ({res.materialize_s:.1f} s), "
            f"{res.http.events:,} events POSTed one by one in time order to "
            f"{res.server_label} ({res.http.seconds:.1f} s), "
            f"{res.http.labels_applied:,} labels applied as they became known "
            f"(event time + label delay), {res.http.late} late answers. "
            f"check_consistency compared {res.compared:,} of {res.logged:,} logged "
            "predictions. Gold = the offline rows of the same events (the values "
            "Feast materializes): ours served vs gold is the same check by another "
            "route."
        )
        worst_inproc = max(
            (a.mismatch_rate for a in res.inproc_vs_gold.values()), default=0.0
        )
        console.print(
            f"In-process replay (fresh state, same bootstrap): "
            f"{len(res.inproc.feature_ms):,} events; values differing from the "
            f"server's logged ones: {res.inproc_vs_served}; worst mismatch vs gold "
            f"{worst_inproc:.2%}; model path {res.inproc.model_path}."
        )
        if res.feast.failure:
            console.print(f"Feast: [yellow]{res.feast.failure}[/yellow]")
        else:
            report = res.feast.report
            console.print(
                f"Feast {report.get('feast')}: worker {res.feast.seconds:.0f} s "
                f"(import {report.get('import_seconds', 0):.1f} s). It serves "
                "the gold row of the entity's last event materialized before the "
                "request, never one computed with the request itself, so its window "
                "features lag by at least one event: that is the mismatch shown, not "
                "a bug in the comparison."
            )
    if stream is not None:
        if not stream.available:
            console.print(f"Stream: {stream.note}")
        elif stream.failure:
            console.print(f"Stream: [red]{stream.failure}[/red]")
        else:
            exact = stream.logged == stream.logged_distinct == stream.published_total
            left = stream.pushed_total - stream.published_total
            console.print(
                f"Stream: {stream.pushed_total:,} events pushed in all (warm-up "
                f"included), {stream.published_total:,} scored and acknowledged "
                f"when the consumers were stopped ({left:,} left in the stream); "
                f"Delta prediction log rows from the consumers: {stream.logged:,} "
                f"({stream.logged_distinct:,} distinct stream ids) -> one row per "
                f"acknowledged event: {'yes' if exact else '[red]no[/red]'}. Latency: "
                "from the input message id (Redis clock at XADD) to the output "
                "message id ("
                + (
                    "published as soon as the micro-batch is scored; the log "
                    "commit and the XACK follow every "
                    f"{stream.commit_interval_ms} ms: 'commit' columns"
                    if stream.commit_interval_ms
                    else "XADD in the consumer's script with the XACK, after the "
                    "Delta commit"
                )
                + "); 'commit': to the commitInfo time of the Delta version "
                "holding the event's log row. The pushing runs in this process on "
                "the same 2 cores. 'late': events flagged because a later event of "
                "the same entity was committed first. Consumers are partitioned by "
                "the customer (the view over recent events), so a terminal's "
                "events arrive through both partitions; a consumer waits until the "
                "other partition is within the terminal view's allowed lateness "
                f"(1 day of event time, about {stream.day_events:,.0f} events at "
                "this clock), so they do not overtake each other by more."
            )


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, seconds-long runs"
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        help="start from a copy of this built workspace (default: build one)",
    )
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument(
        "--stream-only", action="store_true", help="section 4 only (no HTTP, replay)"
    )
    parser.add_argument("--feast-timeout", type=float, default=400.0)
    parser.add_argument("--stream-consumers", type=int, default=STREAM_CONSUMERS)
    parser.add_argument(
        "--stream-linger-ms",
        type=int,
        default=STREAM_LINGER_MS,
        help="the consumers' --linger-ms",
    )
    parser.add_argument(
        "--stream-commit-interval-ms",
        type=int,
        default=STREAM_COMMIT_INTERVAL_MS,
        help="the consumers' --commit-interval-ms",
    )
    parser.add_argument(
        "--stream-rate",
        type=float,
        default=0.0,
        help="sustained stream rate, events/s (default: a share of the capacity)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15,
        help="before each server, wait up to this many seconds for the CPUs to "
        "go quiet (0: don't)",
    )
    return parser.parse_args(argv)


def replay_and_http(
    ctx: Context,
) -> tuple[ConsistencyResult | None, list[LoadRun], bool]:
    """Sections 3 and 1-2; whether one failed."""
    console.rule("3. consistency replay (ours, in process, Feast)")
    res: ConsistencyResult | None = None
    failed = False
    try:
        res = consistency_section(ctx)
    except (RuntimeError, httpx.HTTPError) as exc:
        failed = True
        console.print(f"[red]consistency section failed: {exc}[/red]")
    console.rule("1-2. HTTP load, new events")
    runs = http_section(ctx)
    return res, runs, failed or any(r.failure for r in runs)


def main(argv: list[str] | None = None) -> int:
    """Every section, then the report."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if shutil.which("wrk") is None:
        console.print("[red]wrk is not installed (apt-get install wrk)[/red]")
        return 1
    started = time.perf_counter()
    console.rule("[bold]bench/realtime.py" + (" --quick" if args.quick else ""))
    console.print(f"{machine_line()}; {tree_line()}")
    console.print(f"before: {busy_processes()}")
    use_case = get_use_case(USE_CASE)
    failed = False
    with tempfile.TemporaryDirectory(prefix="aistack-bench-realtime-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        how = prepare_workspace(args, sizes, tmp)
        settings = load_settings(workspace=tmp / "workspace")
        console.print(f"workspace {how}")
        lake = Lake(settings.tables_dir)
        synth = make_synthetic(lake, use_case, tmp)
        ctx = Context(settings, use_case, synth, sizes, tmp, logs, args)

        res: ConsistencyResult | None = None
        runs: list[LoadRun] = []
        if not args.stream_only:
            res, runs, failed = replay_and_http(ctx)

        stream: StreamResult | None = None
        if not args.skip_stream:
            console.rule("4. stream")
            stream = stream_section(ctx)
            failed |= stream.failure is not None

        console.rule("results")
        if runs:
            console.print(http_table(runs, sizes.duration))
        if res is not None:
            console.print(breakdown_table(res.inproc, runs))
            console.print(consistency_table(res, use_case))
            console.print(latency_table(res))
        if stream is not None and stream.available and stream.runs:
            console.print(stream_table(stream))
        if not args.stream_only:
            console.print(targets_table(runs, res))
        print_notes(res, stream, synth, how)
    one, five, _ = os.getloadavg()
    console.print(
        f"whole bench {time.perf_counter() - started:.0f} s; load average "
        f"{one:.2f} / {five:.2f} (1/5 min)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown: a native runtime thread (delta-rs / DuckDB) can
    # abort the process at exit ("terminate called without an active exception")
    os._exit(code)
