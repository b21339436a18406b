"""Advisory locks shared by the platform: a file lock for one host, a PostgreSQL
advisory lock across hosts.

A file lock is an `flock` on a lock file: the kernel releases it when its
holder exits, even on SIGKILL, so a crashed process never leaves a stale lock.
A lock that refuses rather than waits writes who holds it into the file, so
the refusal can name the holder.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(
    path: Path,
    *,
    holder: str | None = None,
    refuse: Callable[[str], Exception] | None = None,
    remove: bool = False,
) -> Iterator[None]:
    """Hold the lock at `path` (waiting for it), or, with `refuse`, raise
    `refuse(current holder's text)` at once when another process holds it.
    `holder`: the text this process leaves in the file while it holds it.
    `remove`: delete the file on release (a lock per port in the temp folder
    would otherwise stay behind); a waiter that got the lock of a removed file
    takes the lock again on the file now at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with path.open("a+") as handle:
            if refuse is None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            else:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    raise refuse(handle.read().strip()) from None
            if remove and not _still_at(path, handle.fileno()):
                continue  # its holder removed it while we waited: the new one
            if holder is not None:
                handle.seek(0)
                handle.truncate()
                handle.write(holder)
                handle.flush()
            try:
                yield
            finally:
                if holder is not None:
                    handle.seek(0)
                    handle.truncate()
                if remove:
                    path.unlink(missing_ok=True)  # before the unlock: see above
                fcntl.flock(handle, fcntl.LOCK_UN)
            return


def _still_at(path: Path, fd: int) -> bool:
    """Whether `path` still names the open file `fd` (not removed or replaced)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def libpq_dsn(uri: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URI
    (`postgresql+psycopg://...` -> `postgresql://...`)."""
    from sqlalchemy.engine import make_url  # only for a PostgreSQL registry

    url = make_url(uri).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def postgres_lock(uri: str, key: int) -> Iterator[None]:
    """Hold PostgreSQL advisory lock `key` in the database of `uri` (waiting)."""
    import psycopg  # only for a PostgreSQL registry

    with psycopg.connect(libpq_dsn(uri), autocommit=True, connect_timeout=10) as con:
        con.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            con.execute("SELECT pg_advisory_unlock(%s)", (key,))
