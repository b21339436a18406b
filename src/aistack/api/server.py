"""Run the API under uvicorn: settings travel to worker processes as environment."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

import psutil
import uvicorn
from prometheus_client import multiprocess

from aistack.api.main import USE_CASE_ENV
from aistack.contract import RankingUseCase, get_any_use_case
from aistack.errors import ConfigError, CrashLoopError
from aistack.governance.audit import AUDIT_HANDOFF_ENV, AuditDrainer, audit_log
from aistack.lake.delta import Lake
from aistack.locks import file_lock
from aistack.serving.log import (
    LOG_HANDOFF_ENV,
    LogFlusher,
    log_schema,
    log_wal_dir,
    prediction_log_table,
)
from aistack.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as AISTACK_* variables, so every worker builds the same ones."""
    env = {
        "AISTACK_WORKSPACE": str(settings.workspace.resolve()),
        "AISTACK_TRACKING_URI": settings.mlflow_uri,
        "AISTACK_SEED": str(settings.seed),
        "AISTACK_HOST": settings.host,
        "AISTACK_PORT": str(settings.port),
        "AISTACK_POLL_SECONDS": str(settings.poll_seconds),
        "AISTACK_MAX_BATCH_ROWS": str(settings.max_batch_rows),
        "AISTACK_LOG_FLUSH_SECONDS": str(settings.log_flush_seconds),
        "AISTACK_EVAL_SECONDS": str(settings.eval_seconds),
        "AISTACK_DRIFT_HISTOGRAMS": str(settings.drift_histograms).lower(),
    }
    if settings.alert_webhook_url:
        env["AISTACK_ALERT_WEBHOOK_URL"] = settings.alert_webhook_url
    if settings.online_url:
        env["AISTACK_ONLINE_URL"] = settings.online_url
    if settings.otlp_endpoint:
        env["AISTACK_OTLP_ENDPOINT"] = settings.otlp_endpoint
    if settings.policy is not None:
        env["AISTACK_POLICY"] = str(settings.policy.resolve())
    env["AISTACK_AUDIT_PREDICTIONS"] = str(settings.audit_predictions).lower()
    env["AISTACK_AUDIT_FLUSH_SECONDS"] = str(settings.audit_flush_seconds)
    if settings.api_tokens:
        env["AISTACK_API_TOKENS"] = json.dumps(
            [t.get_secret_value() for t in settings.api_tokens]
        )
    return env


def _config(http: str) -> uvicorn.Config:
    return uvicorn.Config(
        "aistack.api.main:app_from_env",
        factory=True,
        http=http,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def _worker(host: str, port: int, http: str) -> None:
    """One worker process: its own SO_REUSEPORT socket, so the kernel balances.

    uvicorn's own workers share one listening socket, and connections piled
    onto one worker (measured: 7/25 to 20/12 splits of 32 connections).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    uvicorn.Server(_config(http)).run(sockets=[sock])


logger = logging.getLogger(__name__)

MAX_RESTARTS = 5
"""Worker restarts allowed in RESTART_WINDOW seconds before the server gives up."""
RESTART_WINDOW = 60.0


def _listener(port: int) -> str | None:
    """The pid and command line of the process listening on `port`, if visible."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline())
            except psutil.Error:
                return f"pid {conn.pid}"
            return f"pid {conn.pid} ({command})"
    return None


def _in_use(host: str, port: int, holder: str) -> str:
    return f"port {port} on {host} is in use by {holder}; choose another --port"


@contextmanager
def port_claim(host: str, port: int) -> Iterator[None]:
    """Hold host:port for this server; refuse at once if anything else holds it.

    Workers bind with SO_REUSEPORT, which would let a second server share the
    port silently. A lock file keyed by host:port (an advisory `flock`, released
    even on SIGKILL) refuses a second `aistack serve` naming the first; a plain
    bind without SO_REUSEPORT refuses any other listener.
    """
    path = Path(tempfile.gettempdir()) / f"aistack-serve-{host}-{port}.lock"

    def refuse(holder: str) -> ConfigError:
        return ConfigError(_in_use(host, port, holder or "another aistack serve"))

    with file_lock(
        path, holder=f"pid {os.getpid()} (aistack serve)", refuse=refuse, remove=True
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ConfigError(f"cannot bind {host}:{port}: {exc}") from None
                holder = _listener(port) or "another process"
                raise ConfigError(_in_use(host, port, holder)) from None
        yield


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback with no token, unless explicitly allowed."""
    guarded = settings.api_tokens or settings.policy is not None
    if settings.host in LOOPBACK or guarded or settings.allow_open_access:
        return
    msg = (
        f"host: {settings.host} exposes the API beyond this machine with no bearer "
        "token; set AISTACK_API_TOKENS, or AISTACK_ALLOW_OPEN_ACCESS=true to accept"
    )
    raise ConfigError(msg)


def serve(use_case: str, settings: Settings, *, workers: int, nodelay: bool) -> None:
    """Serve until SIGINT/SIGTERM; shutdown flushes the prediction log.

    Refuses a port already in use; with several workers, restarts any that dies
    (at most MAX_RESTARTS in RESTART_WINDOW seconds, then stops and raises).
    """
    check_exposure(settings)
    with port_claim(settings.host, settings.port):
        os.environ.update(settings_env(settings))
        os.environ[USE_CASE_ENV] = use_case
        http = (
            "aistack.api.nodelay:NoDelayHttpToolsProtocol" if nodelay else "httptools"
        )
        if workers == 1:
            config = _config(http)
            config.host, config.port = settings.host, settings.port
            # uvicorn re-raises the SIGTERM it shut down on; with the default
            # handler that ends the process before the port claim is released
            # (its lock file removed): end it by SystemExit instead
            previous = signal.signal(signal.SIGTERM, _exit_on_term)
            try:
                uvicorn.Server(config).run()
            finally:
                signal.signal(signal.SIGTERM, previous)
            return
        # metrics from every worker, merged on /metrics; a folder we made is ours
        # to remove when the server stops (the operator's own one is left alone)
        made = None
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            made = tempfile.mkdtemp(prefix="aistack-prom-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        committers = log_committers(use_case, settings)
        for variable, committer in committers:
            os.environ[variable] = "1"
            committer.start()
        try:
            _supervise(settings.host, settings.port, http, workers)
        finally:
            for variable, committer in committers:
                committer.close()  # the workers have stopped: what they left
                del os.environ[variable]
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]


class Committer(Protocol):
    """Commits what the workers hand off, from the supervisor."""

    def start(self) -> None: ...
    def close(self) -> None: ...


def log_committers(name: str, settings: Settings) -> list[tuple[str, Committer]]:
    """What a multi-worker server's supervisor commits for its workers, each with
    the variable that tells the workers to hand off: the prediction log (not a
    ranking use case's recommendation log, which its workers commit) and the
    audit records of predictions."""
    use_case = get_any_use_case(name)
    found: list[tuple[str, Committer]] = []
    if not isinstance(use_case, RankingUseCase):
        table = prediction_log_table(use_case)
        flusher = LogFlusher(
            Lake(settings.tables_dir),
            table,
            log_wal_dir(settings.workspace, table),
            log_schema(use_case.feature_names),
            flush_seconds=settings.log_flush_seconds,
        )
        found.append((LOG_HANDOFF_ENV, flusher))
    if settings.audit_predictions:
        audit = audit_log(settings, os.environ)
        drainer = AuditDrainer(
            audit.path,
            flush_seconds=settings.audit_flush_seconds,
            key=audit.key,
            anchor=audit.anchor,
        )
        found.append((AUDIT_HANDOFF_ENV, drainer))
    return found


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _supervise(host: str, port: int, http: str, workers: int) -> None:
    """Run `workers` processes; restart one that dies until told to stop."""
    context = multiprocessing.get_context("spawn")

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(host, port, http))
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:  # each worker shuts down gracefully (log flush)
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    # SIGINT too: a terminal's Ctrl-C also reaches the workers, and a second
    # SIGINT would make uvicorn skip its graceful shutdown, so workers get SIGTERM
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: deque[float] = deque()
    while True:
        if stopping:
            stop(signal.SIGTERM, None)  # again: one may have started after the signal
            for process in processes:
                process.join()
            return
        multiprocessing.connection.wait([p.sentinel for p in processes], timeout=1.0)
        for i, process in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            process.join()
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            now = time.monotonic()
            while restarts and now - restarts[0] > RESTART_WINDOW:
                restarts.popleft()
            if len(restarts) >= MAX_RESTARTS:
                stop(signal.SIGTERM, None)
                for other in processes:
                    other.join()
                msg = (
                    f"serving workers on {host}:{port} died {len(restarts) + 1} "
                    f"times in {RESTART_WINDOW:.0f} s (last: pid {process.pid}, "
                    f"exit code {process.exitcode}); stopped the server"
                )
                raise CrashLoopError(msg)
            delay = 0.5 * 2 ** len(restarts)  # 0.5, 1, 2, 4, 8 s
            logger.warning(
                "serving worker pid %s exited with code %s; restarting it in %.1f s "
                "(%d restarts in the last %.0f s)",
                process.pid,
                process.exitcode,
                delay,
                len(restarts) + 1,
                RESTART_WINDOW,
            )
            restarts.append(now)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stopping:
                time.sleep(0.1)
            if not stopping:
                processes[i] = start()
