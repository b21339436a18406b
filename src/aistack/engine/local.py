"""A Dask cluster on this machine: `dask scheduler` and `dask worker` processes
started by their CLI commands on 127.0.0.1 (for tests and benchmarks)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalCluster:
    """A running local cluster: its scheduler's address and every process id."""

    address: str
    pids: list[int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_cluster(
    folder: Path, *, workers: int = 2, memory_limit: str = "2GB"
) -> Iterator[LocalCluster]:
    """Start a scheduler and `workers` single-thread workers; stop them on exit.

    Yields once every worker has registered. `memory_limit` is per worker
    ("0": none). Worker scratch space goes under `folder`.
    """
    from distributed import Client  # noqa: PLC0415 (only when a cluster is used)

    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                *(dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)),
                *("--dashboard-address", ":0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    for i in range(workers):
        scratch = folder / f"worker-{i}"
        scratch.mkdir(parents=True, exist_ok=True)
        procs.append(
            subprocess.Popen(
                [
                    *(dask, "worker", address, "--nthreads", "1", "--no-nanny"),
                    *("--host", "127.0.0.1", "--dashboard-address", ":0"),
                    *("--local-directory", str(scratch)),
                    *("--memory-limit", memory_limit),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        with Client(address, timeout="60s") as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(workers, timeout=120)
        yield LocalCluster(address, [p.pid for p in procs])
    finally:
        for proc in reversed(procs):  # workers first, then the scheduler
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a worker stuck closing its comms
                proc.kill()
                proc.wait()
