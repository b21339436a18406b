"""Write-ahead segments: JSON-lines files, each flock-ed by the process writing it,
so a segment nobody holds was left by a dead writer and can be replayed."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SEGMENT = ".jsonl"
"""A segment being written (locked by its writer), or left by a dead one."""


def new_segment(folder: Path) -> tuple[Path, IO[bytes]]:
    """A fresh segment in `folder`, open for appending and locked by this process.

    Made under another name, locked, then renamed: a segment is never seen
    unlocked while its writer lives (another process taking a just-created file
    for a dead writer's, and deleting it, would lose what is then written)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex}{SEGMENT}"
    making = path.with_suffix(".new")
    handle = making.open("ab")
    fcntl.flock(handle, fcntl.LOCK_EX)
    making.rename(path)
    return path, handle


def orphan_segments(
    folder: Path, *, skip: Path | None = None, suffix: str = SEGMENT
) -> Iterator[tuple[Path, IO[bytes]]]:
    """Files named `*<suffix>` that no process holds, each now locked by this
    process (oldest name first); `skip`: this process's own live segment."""
    if not folder.exists():
        return
    for path in sorted(folder.glob(f"*{suffix}")):
        if path == skip:
            continue
        try:  # never created here: a file taken meanwhile stays gone
            handle = open(os.open(path, os.O_WRONLY | os.O_APPEND), "ab")  # noqa: SIM115
        except FileNotFoundError:  # taken (renamed or removed) meanwhile
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process owns it
            handle.close()
            continue
        if not path.exists():  # renamed or removed before the lock was ours
            handle.close()
            continue
        yield path, handle


BACKGROUND_NICE = 10
"""Niceness of the threads that commit handed-off segments: the serving
workers come first for the CPU."""


def background_loop(
    step: Callable[[], object], every: float, stop: threading.Event, *, what: str
) -> None:
    """Run `step` now and every `every` seconds until `stop`, on this thread at
    `BACKGROUND_NICE` (this thread only, and the threads it starts, which
    inherit it); a failed step is logged and retried at the next turn."""
    with contextlib.suppress(OSError):  # raising one's own niceness is allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    while True:
        try:
            step()
        except Exception:  # keep the thread alive: the segments stay on disk
            log.exception("%s failed; will retry", what)
        if stop.wait(every):
            return
