"""Write-ahead segments: JSON-lines files, each flock-ed by the process writing it,
so a segment nobody holds was left by a dead writer and can be replayed."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def new_segment(folder: Path) -> tuple[Path, IO[bytes]]:
    """A fresh segment in `folder`, open for appending and locked by this process."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex}.jsonl"
    handle = path.open("ab")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return path, handle


def orphan_segments(
    folder: Path, *, skip: Path | None = None
) -> Iterator[tuple[Path, IO[bytes]]]:
    """Segments whose writer is gone, each now locked by this process (oldest
    name first); `skip`: this process's own live segment."""
    if not folder.exists():
        return
    for path in sorted(folder.glob("*.jsonl")):
        if path == skip:
            continue
        handle = path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process owns it
            handle.close()
            continue
        yield path, handle
