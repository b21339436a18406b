"""Benchmark online serving: our server against `mlflow models serve`, same model.

One run, one machine, loopback only, one bounded load generator: `wrk` (keep-alive,
fixed duration per run) with the Lua script in bench/_serving_lua/, which rotates
through pre-rendered bodies built from real transactions of the workspace.

* ours: `aistack serve` (FastAPI + uvicorn, uvloop, httptools) at each --workers
  count with TCP_NODELAY on and, above one worker, also off (uvicorn#3149). Every
  request includes the online feature lookup and the prediction log append.
* mlflow: `mlflow models serve --env-manager local` on the same champion version.
  It has no feature lookup: it is sent the model's input columns directly.

Runs: single rows at concurrency 1, 8 and 32 (requests/s, p50, p99); 1,000-row
batches at concurrency 2 (rows/s); ours also paced at 1,000 requests/s (p99). Prints
the ratio to mlflow for each run and the issue's targets (PASS/FAIL). Exits 0 when
a target is missed; 1 when a server or a load run fails.

    .venv/bin/python bench/serving.py                      # small temp workspace
    .venv/bin/python bench/serving.py --workspace /tmp/bench_ws --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import orjson
import psutil
from rich.console import Console
from rich.table import Table

from aistack.contract import UseCase, get_use_case
from aistack.features.online import open_store
from aistack.features.state import open_event_state
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.serving.inference import Predictor
from aistack.serving.requests import score_requests
from aistack.settings import Settings, load_settings

USE_CASE = "fraud"
LUA = Path(__file__).resolve().parent / "_serving_lua" / "post_bodies.lua"
BIN = Path(sys.executable).parent
SMALL_WORKSPACE = {"customers": 2000, "terminals": 4000, "days": 60}

SINGLE_CONCURRENCY = (1, 8, 32)
BATCH_ROWS = 1000
BATCH_BODIES = 4
BATCH_CONCURRENCY = 2
PACED_RATE = 1000  # requests/s
PACED_CONNECTIONS = 20  # enough to keep the schedule when one answer is slow
RECENT_DAYS = 2  # request bodies come from the workspace's last days
CHECK_ROWS = 16  # bodies whose scores are compared with a local scoring
WARMUP_S = 2
WRK_TIMEOUT_S = 10  # per request; mlflow's 1,000-row batches take a while
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
QUIET_BUSY_PERCENT = 15.0  # machine CPU use under which a server config starts
BUDGET_S = 570  # runs that would start after this are skipped (whole bench < 10 min)

TARGET_RPS = 1500
TARGET_RATIO = 20
TARGET_P99_MS = 10
TARGET_PACED_SHARE = 0.95  # the paced run must reach 95 % of its rate to count
TARGET_ROWS_S = 80_000
ISSUE_MLFLOW = "60-85 req/s, p50 ~11 ms at concurrency 1"
ISSUE_BARE = "~1,700 req/s on two workers (ONNX, no feature lookup)"

# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #


@dataclass
class Run:
    """One wrk run against one server."""

    server: str
    test: str  # "single", "batch" or "paced"
    concurrency: int
    rows_per_request: int
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0  # non-2xx answers and socket errors (timeouts included)
    server_cores: float = float("nan")  # server CPU seconds per wall second
    wrk_cores: float = float("nan")
    other_cores: float = float("nan")  # every other process on the machine
    failure: str | None = None

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    @property
    def rows_s(self) -> float:
        """Rows scored per second."""
        return self.rps * self.rows_per_request

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU milliseconds per request answered."""
        if not self.requests or math.isnan(self.server_cores):
            return float("nan")
        return self.server_cores * self.seconds / self.requests * 1e3

    @property
    def ok(self) -> bool:
        """The run finished, with no error answer."""
        return self.failure is None and self.errors == 0 and self.requests > 0


@dataclass
class ServerInfo:
    """What a server reported about itself (ours only) and its single-row means."""

    label: str
    paths: str = ""
    lookup_ms: float = float("nan")
    request_ms: float = float("nan")
    startup_s: float = float("nan")
    score_gap: float = float("nan")  # max |server score - local score| on CHECK_ROWS
    nodelay: str = "unknown"  # TCP_NODELAY observed on the server's socket
    failure: str | None = None


@dataclass
class Workload:
    """Request bodies (one per line) for both servers, and what to check them with."""

    folder: Path
    columns: list[str]  # mlflow's input columns (model signature)
    version: int
    ours_single: Path = field(init=False)
    ours_batch: Path = field(init=False)
    mlflow_single: Path = field(init=False)
    mlflow_batch: Path = field(init=False)
    check_bodies: list[bytes] = field(default_factory=list)
    check_mlflow: bytes = b""
    expected: list[float] = field(default_factory=list)
    rows: int = 0

    def __post_init__(self) -> None:
        self.ours_single = self.folder / "ours_single.jsonl"
        self.ours_batch = self.folder / "ours_batch.jsonl"
        self.mlflow_single = self.folder / "mlflow_single.jsonl"
        self.mlflow_batch = self.folder / "mlflow_batch.jsonl"


# --------------------------------------------------------------------------- #
# Workspace and request bodies
# --------------------------------------------------------------------------- #


def aistack(args: list[str], console: Console) -> None:
    """Run the aistack CLI (this interpreter), failing loudly."""
    done = subprocess.run(
        [sys.executable, "-m", "aistack", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        console.print(f"[red]aistack {' '.join(args)} failed[/red]")
        console.print(done.stdout[-3000:] + done.stderr[-3000:], markup=False)
        raise SystemExit(1)


def prepare_workspace(
    args: argparse.Namespace, tmp: Path, console: Console
) -> tuple[Path, str]:
    """The workspace to serve from (built when none is given), materialized."""
    if args.workspace is not None:
        workspace = args.workspace.resolve()
        if not (workspace / "mlflow.db").exists():
            console.print(f"[red]{workspace} has no mlflow.db: run aistack first[/red]")
            raise SystemExit(1)
        how = "reused (--workspace)"
    else:
        workspace = tmp / "workspace"
        start = time.perf_counter()
        size = [f"--{k}={v}" for k, v in SMALL_WORKSPACE.items()]
        aistack(["run", USE_CASE, *size, "-w", str(workspace), "-q"], console)
        how = (
            "built for this run ("
            + ", ".join(f"{v:,} {k}" for k, v in SMALL_WORKSPACE.items())
            + f", {time.perf_counter() - start:.0f} s)"
        )
    online = ["--online-url", args.online_url] if args.online_url else []
    aistack(["materialize", USE_CASE, "-w", str(workspace), *online], console)
    return workspace, how


def sample_requests(lake: Lake, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` real transactions from the last days of silver, as request bodies."""
    columns = ["transaction_id", "customer_id", "terminal_id", "tx_amount"]
    table = lake.read("silver.transactions", columns=[*columns, "tx_datetime"])
    times = table.column("tx_datetime").to_numpy()
    recent = np.flatnonzero(times >= times.max() - np.timedelta64(RECENT_DAYS, "D"))
    rng = np.random.default_rng(seed)
    picked = table.take(rng.choice(recent, size=n, replace=len(recent) < n))
    return [
        {
            "transaction_id": int(r["transaction_id"]),
            "customer_id": int(r["customer_id"]),
            "terminal_id": int(r["terminal_id"]),
            "tx_amount": float(r["tx_amount"]),
            "tx_datetime": r["tx_datetime"].isoformat(),
        }
        for r in picked.to_pylist()
    ]


def write_lines(path: Path, bodies: list[bytes]) -> None:
    """One JSON body per line (orjson never writes a raw newline)."""
    path.write_bytes(b"\n".join(bodies) + b"\n")


def build_workload(
    use_case: UseCase, settings: Settings, folder: Path, seed: int
) -> Workload:
    """Bodies for both servers; mlflow's carry the features our lookup would find.

    The features come from `score_requests` over the same online store the server
    reads, with the champion loaded natively here, so the local scores also check
    both servers' answers.
    """
    lake = Lake(settings.tables_dir)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    version = Registry(lake, settings.mlflow_uri).version_of(use_case.name, "champion")
    if version is None or use_case.serving is None:
        msg = f"no champion for {use_case.name} in {settings.workspace}"
        raise SystemExit(msg)
    uri = f"models:/{use_case.name}/{version}"
    model = mlflow.sklearn.load_model(uri)
    signature = mlflow.models.get_model_info(uri).signature
    columns: list[str] = signature.inputs.input_names()
    bodies = sample_requests(lake, BATCH_ROWS * BATCH_BODIES, seed)
    request = use_case.serving.request
    payloads = [request.model_validate(b).model_dump() for b in bodies]
    store = open_store(settings.online_url, settings.workspace, use_case.name)
    events = open_event_state(settings.online_url, settings.workspace, use_case.name)
    scored = score_requests(
        use_case,
        store,
        Predictor(use_case.name, version, model),
        payloads,
        events=events,
        update_state=False,  # the servers will add these events themselves
    )
    ident = use_case.labels.id
    defaults = use_case.feature_defaults
    matrix = [
        [
            float(b[ident])
            if c == ident
            else (s.features[c] if s.features[c] is not None else defaults[c])
            for c in columns
        ]
        for b, s in zip(bodies, scored, strict=True)
    ]
    work = Workload(folder, columns, version, rows=len(bodies))

    def frame(rows: list[list[float]]) -> bytes:
        return orjson.dumps({"dataframe_split": {"columns": columns, "data": rows}})

    chunks = range(0, len(bodies), BATCH_ROWS)
    write_lines(work.ours_single, [orjson.dumps(b) for b in bodies])
    write_lines(work.mlflow_single, [frame([row]) for row in matrix])
    write_lines(
        work.ours_batch,
        [orjson.dumps({"rows": bodies[i : i + BATCH_ROWS]}) for i in chunks],
    )
    write_lines(work.mlflow_batch, [frame(matrix[i : i + BATCH_ROWS]) for i in chunks])
    work.check_bodies = [orjson.dumps(b) for b in bodies[:CHECK_ROWS]]
    work.check_mlflow = frame(matrix[:CHECK_ROWS])
    work.expected = [s.score for s in scored[:CHECK_ROWS]]
    return work


# --------------------------------------------------------------------------- #
# Servers
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Config:
    """One server configuration."""

    kind: str  # "ours" or "mlflow"
    workers: int = 1
    nodelay: bool = True
    env: tuple[tuple[str, str], ...] = ()  # extra server environment
    name: str = ""  # label override

    @property
    def ours(self) -> bool:
        """Our server (not mlflow's)."""
        return self.kind == "ours"

    @property
    def label(self) -> str:
        """How the tables name it."""
        if self.name:
            return self.name
        if not self.ours:
            return "mlflow serve"
        return f"ours w={self.workers} nodelay " + ("on" if self.nodelay else "off")

    @property
    def slug(self) -> str:
        """File-name form of the label."""
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower())


@dataclass
class Server:
    """A server subprocess (its own session, so its whole group is stopped)."""

    config: Config
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        """Root URL."""
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and its live descendants."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return float("nan")
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
        return total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not I/O wait)."""
    t = psutil.cpu_times()._asdict()
    not_busy = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest is in user
    return float(sum(v for k, v in t.items() if k not in not_busy))


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """Status and body of a GET (or a JSON POST when `body` is given)."""
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    req.add_header("Content-Type", "application/json")
    if os.environ.get("BENCH_AUTH"):  # a bearer token, as the wrk script sends it
        req.add_header("Authorization", f"Bearer {os.environ['BENCH_AUTH']}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


_MODEL_INFO = re.compile(r"^aistack_model_info\{([^}]*)\}\s+1\.0\s*$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def model_info(server: Server) -> list[dict[str, str]]:
    """The labels of each live worker's `aistack_model_info` series."""
    status, text = http(server.base + "/metrics")
    if status != 200:
        return []
    return [
        dict(_LABEL.findall(m.group(1))) for m in _MODEL_INFO.finditer(text.decode())
    ]


def histogram_totals(server: Server) -> dict[str, tuple[float, int]]:
    """(sum, count) of the single-row request latency and of the feature lookup."""
    status, raw = http(server.base + "/metrics")
    wanted = {
        "request": ("aistack_request_latency_seconds", f"/v1/{USE_CASE}/predict"),
        "lookup": ("aistack_feature_lookup_seconds", None),
    }
    totals = {key: (0.0, 0) for key in wanted}
    if status != 200:
        return totals
    for line in raw.decode().splitlines():
        for key, (name, route) in wanted.items():
            is_sum = line.startswith(f"{name}_sum")
            if not (is_sum or line.startswith(f"{name}_count")):
                continue
            if route is not None and f'route="{route}"' not in line:
                continue
            value = float(line.rsplit(" ", 1)[1])
            total, count = totals[key]
            totals[key] = (
                (total + value, count) if is_sum else (total, count + int(value))
            )
    return totals


def start_server(config: Config, settings: Settings, logs: Path) -> Server:
    """Start our server or mlflow's on a free loopback port (not yet ready)."""
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if config.ours:
        command = [
            sys.executable,
            "-m",
            "aistack",
            "serve",
            USE_CASE,
            "-w",
            str(settings.workspace),
            "--port",
            str(port),
            "--workers",
            str(config.workers),
            "--nodelay" if config.nodelay else "--no-nodelay",
        ]
        if settings.online_url:
            command += ["--online-url", settings.online_url]
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server makes a fresh one
        env.update(config.env)
    else:
        command = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{USE_CASE}@champion",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "--host",
            "127.0.0.1",
        ]
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
    log_path = logs / f"{config.slug}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return Server(config, port, proc, log_path)


SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def server_nodelay(server: Server) -> str:
    """TCP_NODELAY as set on the server's side of a keep-alive connection.

    Read from the server's own socket: its fd is found with psutil and copied
    with pidfd_getfd (Linux >= 5.6, needs ptrace rights over the server).
    """
    path = "/health" if server.config.ours else "/ping"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        client.recv(65536)
        mine = client.getsockname()
        try:
            root = psutil.Process(server.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return "unknown"
        for proc in procs:
            try:
                conns = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            for conn in conns:
                peer = conn.raddr
                if peer and (peer.ip, peer.port) == mine and conn.fd >= 0:
                    return _socket_nodelay(proc.pid, conn.fd)
    return "unknown"


def _socket_nodelay(pid: int, fd: int) -> str:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return "unknown"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            return "unknown"
        with socket.socket(fileno=copy) as sock:
            on = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return "on" if on else "off"
    finally:
        os.close(pidfd)


def wait_ready(server: Server) -> None:
    """Until it answers (ours: every worker has loaded the champion); or raise."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    config = server.config
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            msg = f"{config.label} exited with {server.proc.returncode}"
            raise RuntimeError(msg)
        if not config.ours:
            if http(server.base + "/ping", timeout=2)[0] == 200:
                return
        elif http(server.base + "/ready", timeout=2)[0] == 200:
            loaded = {i.get("pid", "-") for i in model_info(server)}
            if len(loaded) >= config.workers:
                return
        time.sleep(0.25)
    msg = f"{config.label} not ready after {READY_TIMEOUT_S} s"
    raise RuntimeError(msg)


def stop_server(server: Server) -> None:
    """SIGTERM the server's process group (ours flushes its log), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    # workers orphaned by a dead supervisor would still be in the group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(config: Config, settings: Settings, logs: Path) -> Iterator[Server]:
    """A ready server; always stopped afterwards."""
    server = start_server(config, settings, logs)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


# --------------------------------------------------------------------------- #
# Load
# --------------------------------------------------------------------------- #


_WRK_JSON = re.compile(r"^WRK_JSON (\{.*\})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Load:
    """One wrk run to make: route, bodies, connections, rows per body, pacing."""

    test: str  # "single", "batch", "paced" or "warm-up"
    path: str
    bodies: Path
    concurrency: int
    rows: int = 1
    rate: int = 0  # requests/s over all threads; 0: as fast as answered


def wrk(server: Server, load: Load, duration: float, threads: int) -> Run:
    """One fixed-duration wrk run; latency percentiles come from the Lua done()."""
    threads = max(1, min(threads, load.concurrency))
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{load.concurrency}",
        f"-d{duration:g}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(LUA),
        server.base + load.path,
    ]
    env = {
        **os.environ,
        "BENCH_BODIES": str(load.bodies),
        "BENCH_RATE": f"{load.rate / threads:g}",
    }
    run = Run(server.config.label, load.test, load.concurrency, load.rows)
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
        said = (done.stderr or done.stdout)[-300:]
        run.failure = f"wrk exit {done.returncode}: {said}"
        return run
    stats = orjson.loads(found.group(1))
    run.requests = int(stats["requests"])
    run.seconds = stats["duration_us"] / 1e6
    run.p50_ms = stats["p50_us"] / 1e3
    run.p99_ms = stats["p99_us"] / 1e3
    errors = ("non2xx", "connect", "read", "write", "timeout")
    run.errors = sum(int(stats[k]) for k in errors)
    return run


def check_scores(server: Server, work: Workload) -> float:
    """Largest |score - local score| over the check rows (nan if unanswered)."""
    if not server.config.ours:
        status, raw = http(server.base + "/invocations", work.check_mlflow, 60)
        if status != 200:
            return float("nan")
        got = [float(x) for x in orjson.loads(raw)["predictions"]]
    else:
        got = []
        for body in work.check_bodies:
            status, raw = http(server.base + f"/v1/{USE_CASE}/predict", body)
            if status != 200:
                return float("nan")
            got.append(float(orjson.loads(raw)["score"]))
    return float(np.max(np.abs(np.array(got) - np.array(work.expected))))


def loads_for(config: Config, work: Workload) -> list[Load]:
    """The runs of one configuration, in order (ours: also the paced run)."""
    if config.ours:
        single = Load("single", f"/v1/{USE_CASE}/predict", work.ours_single, 1)
        batch_path, batch_bodies = f"/v1/{USE_CASE}/predict/batch", work.ours_batch
    else:
        single = Load("single", "/invocations", work.mlflow_single, 1)
        batch_path, batch_bodies = "/invocations", work.mlflow_batch
    loads = [replace(single, concurrency=c) for c in SINGLE_CONCURRENCY]
    if config.ours:
        loads.append(
            replace(
                single, test="paced", concurrency=PACED_CONNECTIONS, rate=PACED_RATE
            )
        )
    loads.append(
        Load("batch", batch_path, batch_bodies, BATCH_CONCURRENCY, rows=BATCH_ROWS)
    )
    return loads


@dataclass
class Plan:
    """What to run with, and the time budget."""

    args: argparse.Namespace
    work: Workload
    settings: Settings
    logs: Path
    started: float
    skipped: list[str] = field(default_factory=list)

    def fits(self, runs: int) -> bool:
        """Whether `runs` more wrk runs (and a warm-up) fit in the budget."""
        needed = runs * (self.args.duration + 1) + WARMUP_S + 10 + self.args.quiet_wait
        return time.perf_counter() - self.started + needed <= BUDGET_S


def bench_server(
    plan: Plan, config: Config, console: Console
) -> tuple[list[Run], ServerInfo]:
    """Every run against one server configuration."""
    args, work = plan.args, plan.work
    info = ServerInfo(config.label)
    loads = loads_for(config, work)
    runs: list[Run] = []
    if not plan.fits(len(loads)):
        plan.skipped.append(config.label)
        info.failure = f"skipped: over the {BUDGET_S} s budget"
        return runs, info
    quiet = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else ""
    start = time.perf_counter()
    try:
        with running(config, plan.settings, plan.logs) as server:
            info.startup_s = time.perf_counter() - start
            info.score_gap = check_scores(server, work)
            info.nodelay = server_nodelay(server)
            labels = model_info(server) if config.ours else []
            if labels:
                first = labels[0]
                info.paths = (
                    f"v{first.get('model_version')}, single-row path "
                    f"{first.get('single_row_path')}, batch path "
                    f"{first.get('batch_path')}"
                )
            console.print(
                f"  {config.label}: ready in {info.startup_s:.1f} s; {_load()}"
                + (f"; {quiet}" if quiet else "")
            )
            warm = replace(loads[0], test="warm-up", concurrency=8)
            wrk(server, warm, WARMUP_S, args.wrk_threads)
            before = histogram_totals(server)
            for load in loads:
                if load.test != "single" and config.ours and before:
                    after = histogram_totals(server)
                    info.request_ms = _mean_ms(before["request"], after["request"])
                    info.lookup_ms = _mean_ms(before["lookup"], after["lookup"])
                    before = {}
                run = wrk(server, load, args.duration, args.wrk_threads)
                runs.append(run)
                if run.failure:
                    console.print(
                        f"  [red]{run.test} c={run.concurrency}: {run.failure}[/red]"
                    )
    except RuntimeError as exc:
        info.failure = str(exc)
        console.print(f"[red]{exc}[/red]")
        log_path = plan.logs / f"{config.slug}.log"
        if log_path.exists():
            console.print(log_path.read_text(errors="replace")[-3000:], markup=False)
    return runs, info


def _mean_ms(before: tuple[float, int], after: tuple[float, int]) -> float:
    count = after[1] - before[1]
    return (after[0] - before[0]) / count * 1e3 if count > 0 else float("nan")


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"


def _num(value: float, fmt: str = ",.0f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def _ratio(ours: float, theirs: float, *, higher_is_better: bool = True) -> str:
    """How many times better ours is ('-' when either is missing)."""
    if math.isnan(ours) or math.isnan(theirs) or ours <= 0 or theirs <= 0:
        return "-"
    return f"{ours / theirs if higher_is_better else theirs / ours:,.1f}x"


RESULT_COLUMNS = (
    "server",
    "test",
    "conc",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "srv CPU",
    "CPU ms/req",
    "wrk CPU",
    "other CPU",
    "errors",
    "rate vs mlflow",
    "p50 vs mlflow",
    "p99 vs mlflow",
)


def results_table(runs: list[Run], duration: float) -> Table:
    """Every run, with how many times better than mlflow's run of the same kind."""
    table = Table(
        title=f"Runs: wrk, keep-alive, {duration:g} s each, loopback. CPU: cores used "
        "(of 2). rate = req/s (rows/s for batches). 'vs mlflow': times better"
    )
    for name in RESULT_COLUMNS:
        text = name in ("server", "test")
        table.add_column(name, justify="left" if text else "right", no_wrap=text)
    theirs = {(r.test, r.concurrency): r for r in runs if r.server == "mlflow serve"}
    nan = float("nan")
    for r in runs:
        base = theirs.get((r.test, r.concurrency))
        if base is None or base is r or not (base.ok and r.ok):
            base = Run("", r.test, r.concurrency, 1)  # all nan: no ratio
        test = {"single": "1 row", "batch": f"{r.rows_per_request:,} rows"}.get(
            r.test, f"paced {PACED_RATE:,}/s"
        )
        table.add_row(
            r.server,
            test,
            str(r.concurrency),
            _num(r.rps),
            _num(r.rows_s),
            _num(r.p50_ms, ".2f"),
            _num(r.p99_ms, ".2f"),
            _num(r.server_cores, ".2f"),
            _num(r.cpu_ms_per_request, ".2f"),
            _num(r.wrk_cores, ".2f"),
            _num(r.other_cores, ".2f"),
            "FAILED" if r.failure else f"{r.errors:,}",
            _ratio(r.rps, base.rps if base.requests else nan),
            _ratio(r.p50_ms, base.p50_ms, higher_is_better=False),
            _ratio(r.p99_ms, base.p99_ms, higher_is_better=False),
        )
    return table


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]n/a[/yellow]"
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def targets_table(runs: list[Run]) -> Table:
    """The issue's targets, on our best run of each kind with TCP_NODELAY on."""
    table = Table(title="Targets (2 cores, online feature lookup included)")
    for name in ("target", "measured (best of our nodelay runs)", "goal", "verdict"):
        table.add_column(name)
    ours = [r for r in runs if r.server.startswith("ours") and r.server.endswith(" on")]
    mlf = [r for r in runs if r.server == "mlflow serve" and r.test == "single"]

    def best(test: str) -> Run | None:
        done = [r for r in ours if r.test == test and r.ok]
        return max(done, key=lambda r: r.rps, default=None)

    single = best("single")
    table.add_row(
        "single-row requests/s",
        "-" if single is None else f"{single.rps:,.0f} ({_where(single)})",
        f">= {TARGET_RPS:,}",
        _verdict(None if single is None else single.rps >= TARGET_RPS),
    )
    base = max((r for r in mlf if r.ok), key=lambda r: r.rps, default=None)
    if single is None or base is None:
        table.add_row("single-row requests/s vs mlflow", "-", "", _verdict(None))
    else:
        ratio = single.rps / base.rps
        table.add_row(
            "single-row requests/s vs mlflow serve (best vs best)",
            f"{ratio:.1f}x (mlflow: {base.rps:,.0f} req/s at c={base.concurrency})",
            f">= {TARGET_RATIO}x",
            _verdict(ratio >= TARGET_RATIO),
        )
    floor = TARGET_PACED_SHARE * PACED_RATE
    paced = [r for r in ours if r.test == "paced" and r.requests > 0]
    steady = [r for r in paced if r.ok and r.rps >= floor]
    p = min(steady or paced, key=lambda r: r.p99_ms, default=None)
    table.add_row(
        f"p99 at {PACED_RATE:,} requests/s",
        "-"
        if p is None
        else f"{p.p99_ms:.2f} ms at {p.rps:,.0f} req/s, {p.errors} errors ({p.server})",
        f"< {TARGET_P99_MS} ms, at >= {floor:,.0f} req/s",
        _verdict(None if p is None else p in steady and p.p99_ms < TARGET_P99_MS),
    )
    batch = best("batch")
    table.add_row(
        f"rows/s through the batch route ({BATCH_ROWS:,}-row requests)",
        "-" if batch is None else f"{batch.rows_s:,.0f} ({_where(batch)})",
        f">= {TARGET_ROWS_S:,}",
        _verdict(None if batch is None else batch.rows_s >= TARGET_ROWS_S),
    )
    return table


def _where(run: Run) -> str:
    return f"{run.server}, c={run.concurrency}"


def machine_line() -> str:
    """CPU model and count, memory."""
    model = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    mem = psutil.virtual_memory().total / 2**30
    return f"{cores} cores ({model}), {mem:.0f} GiB"


def tree_line() -> str:
    """The commit measured, and how many files differ from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "tree: unknown (no git)"
    dirty = f" + {len(status)} changed files under src/" if status else ""
    return f"tree: {head}{dirty}"


def wait_quiet(limit_s: float) -> str:
    """Wait (at most `limit_s`) until other work leaves the CPUs mostly idle."""
    deadline = time.monotonic() + limit_s
    busy = psutil.cpu_percent(interval=1.0)
    while busy > QUIET_BUSY_PERCENT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    quiet = "quiet" if busy <= QUIET_BUSY_PERCENT else "[yellow]busy[/yellow]"
    return f"machine {quiet} ({busy:.0f}% CPU over 1 s before start)"


def busy_processes(seconds: float = 1.0, top: int = 3) -> str:
    """Total CPU use over a short sample, and the busiest other processes."""
    procs = list(psutil.process_iter(["name", "pid"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    total = psutil.cpu_percent(interval=seconds)
    use: list[tuple[float, str]] = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid():
                use.append((p.cpu_percent(None), f"{p.info['name']}[{p.pid}]"))
    use.sort(reverse=True)
    busiest = ", ".join(f"{name} {pct:.0f}%" for pct, name in use[:top] if pct >= 1)
    return f"CPU busy {total:.0f}% over {seconds:g} s" + (
        f"; busiest: {busiest}" if busiest else ""
    )


def print_notes(
    infos: list[ServerInfo], plan: Plan, console: Console, how: str
) -> None:
    """Server-side views, checks and how to read the numbers."""
    for info in infos:
        if info.failure:
            console.print(f"{info.label}: [red]{info.failure}[/red]")
            continue
        parts = [
            f"ready in {info.startup_s:.1f} s",
            f"TCP_NODELAY on its accepted sockets: {info.nodelay}",
        ]
        if info.paths:
            parts.append(f"model {info.paths}")
        gap = info.score_gap
        parts.append(f"max |score - local score| over {CHECK_ROWS} rows {gap:.2g}")
        if not math.isnan(info.request_ms):
            parts.append(
                f"server-side mean over the single-row runs: request "
                f"{info.request_ms:.2f} ms, online lookup {info.lookup_ms:.2f} ms"
            )
        console.print(f"{info.label}: " + "; ".join(parts))
    work = plan.work
    console.print(
        f"Workspace {how}. Model version {work.version}. Bodies: {work.rows:,} real "
        f"transactions of the last {RECENT_DAYS} days of silver.transactions "
        f"(rotated per request), {BATCH_BODIES} distinct {BATCH_ROWS:,}-row batches."
    )
    console.print(
        "mlflow serve has no feature lookup: it is sent the "
        f"{len(work.columns)} model input columns directly (dataframe_split), with "
        "the values our online lookup finds for the same transactions. Ours looks "
        "up both feature views in the online store, computes the request-time "
        "features, scores, and queues each prediction for the Delta prediction log."
    )
    console.print(
        "wrk and the servers share the same 2 cores (loopback). CPU columns are "
        "cores used during the run: the server's processes, wrk, and every other "
        "process on the machine ('other CPU' > 0.1 means someone else's work "
        "competed with the run). The paced run holds "
        f"{PACED_CONNECTIONS} connections and sends on a fixed {PACED_RATE:,}/s "
        "schedule (Lua delay() per request); its p99 excludes the wait for the slot."
    )
    console.print(
        "'nodelay off' rows start our server with --no-nodelay: uvicorn's own "
        "protocol, which with more than one worker leaves Nagle's algorithm on "
        "under asyncio's loop (uvicorn#3149: ~40 ms per keep-alive answer). The "
        "TCP_NODELAY lines above show what each server's accepted sockets really "
        "had."
    )
    console.print(
        f"For scale (the issue's figures): mlflow serve {ISSUE_MLFLOW}; a bare "
        f"FastAPI endpoint around an ONNX model {ISSUE_BARE}."
    )


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace",
        type=Path,
        help="reuse this workspace (champion registered); default: build a small "
        "one in a temporary folder",
    )
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds per wrk run (default 10)"
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="only our server")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="our server's worker counts, comma-separated (default 1,2); above one "
        "worker, each count runs with TCP_NODELAY on and off",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (at most one per connection; default 1: one thread "
        "drives far more than these servers answer and leaves the cores to them)",
    )
    parser.add_argument(
        "--online-url", help="online store URL for our server (default: SQLite)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30,
        help="before each server, wait up to this many seconds for other work on "
        f"the machine to drop under {QUIET_BUSY_PERCENT:.0f}%% CPU (default 30; 0: "
        "don't)",
    )
    parser.add_argument("--seed", type=int, default=0, help="request sampling seed")
    args = parser.parse_args(argv)
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: positive integers, e.g. 1,2")
    if not 1 <= args.duration <= 60:
        parser.error("--duration: 1 to 60 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    """Prepare, run every server configuration, print the report."""
    args = parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 170)
    if shutil.which("wrk") is None:
        console.print("[red]wrk is not installed (apt-get install wrk)[/red]")
        return 1
    started = time.perf_counter()
    console.print(f"[bold]bench/serving.py[/bold]: {machine_line()}; {tree_line()}")
    console.print(f"before: {_load()}; {busy_processes()}")
    configs: list[Config] = []
    for w in args.worker_counts:
        configs.append(Config("ours", w, nodelay=True))
        if w > 1:  # uvicorn#3149: only multi-worker servers leave Nagle on
            configs.append(Config("ours", w, nodelay=False))
    if not args.skip_mlflow:
        configs.append(Config("mlflow"))
    with tempfile.TemporaryDirectory(prefix="aistack-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        workspace, how = prepare_workspace(args, tmp, console)
        settings = load_settings(workspace=workspace, online_url=args.online_url)
        use_case = get_use_case(USE_CASE)
        prep = time.perf_counter()
        work = build_workload(use_case, settings, tmp, args.seed)
        console.print(
            f"workspace {workspace} ({how}); {work.rows:,} request bodies and their "
            f"features in {time.perf_counter() - prep:.1f} s"
        )
        plan = Plan(args, work, settings, logs, started)
        runs: list[Run] = []
        infos: list[ServerInfo] = []
        for config in configs:
            got, info = bench_server(plan, config, console)
            runs.extend(got)
            infos.append(info)
    console.print(results_table(runs, args.duration))
    console.print(targets_table(runs))
    print_notes(infos, plan, console, how)
    console.print(
        f"after: {_load()}; whole bench {time.perf_counter() - started:.0f} s"
    )
    failed = any(i.failure and not i.failure.startswith("skipped") for i in infos)
    return 1 if failed or any(r.failure for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
