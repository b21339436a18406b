"""Real servers for tests: redis-server, PostgreSQL 15 and `aistack serve`, on free
127.0.0.1 ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aistack.engine.local import local_cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return found


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway Redis on 127.0.0.1 without persistence."""
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # initdb refuses root: run the server as this system user


def _as_postgres_user(command: list[str]) -> list[str]:
    """`command` as the unprivileged `postgres` user when running as root."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    try:
        subprocess.run(["id", "-u", PG_USER], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        pytest.skip(f"running as root and no {PG_USER!r} user to run PostgreSQL as")
    return [runuser, "-u", PG_USER, "--", *command]


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL 15 (initdb in a temp dir, trust auth on 127.0.0.1,
    fsync off); yields `postgresql://postgres@127.0.0.1:PORT/postgres`."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(
            f"PostgreSQL 15 is not installed ({PG_BIN}): apt-get install postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="aistack-pg-"))
    data = root / "data"
    if os.geteuid() == 0:  # the server's user must own its folders
        shutil.chown(root, PG_USER)
    run = subprocess.run
    init = [str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust"]
    run(
        [*_as_postgres_user(init), "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-l",
        str(root / "log"),
        "start",
    ]
    run(_as_postgres_user(start), check=True, capture_output=True)
    try:
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        run(_as_postgres_user(stop), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """A new empty database on the server of `url`; its URL."""
    import psycopg  # noqa: PLC0415 - only tests that start PostgreSQL need it
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def aistack_server(
    workspace: Path,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    use_case: str = "fraud",
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`aistack serve <use case>` in a subprocess; yields its URL once /health
    answers."""
    port = free_port()
    full_env = {
        **os.environ,
        "AISTACK_POLL_SECONDS": "0.3",
        "AISTACK_EVAL_SECONDS": "0.3",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aistack",
            "serve",
            use_case,
            "--port",
            str(port),
            "-w",
            str(workspace),
            *args,
        ],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # spawned workers re-import: slow on busy cores
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start in 180 s")
        time.sleep(0.2)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def dask_cluster(tmp: Path, *, workers: int = 2) -> Iterator[str]:
    """A real Dask cluster on 127.0.0.1 (`dask scheduler`, `dask worker`
    processes); yields the scheduler's address."""
    with local_cluster(tmp, workers=workers) as cluster:
        yield cluster.address
