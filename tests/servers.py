"""Real servers for tests: redis-server and `aistack serve`, on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


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
