"""The storage and registry a command works against, built from settings."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from aistack.engine import DaskEngine, EmbeddedEngine, open_engine
from aistack.errors import ConfigError, RegistryError
from aistack.governance.audit import AuditLog, audit_log
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.settings import Settings


@dataclass
class Workspace:
    """The storage and registry a run works against, built from settings."""

    settings: Settings
    lake: Lake = field(init=False)
    registry: Registry = field(init=False)
    audit: AuditLog = field(init=False)
    engine: EmbeddedEngine | DaskEngine = field(init=False)

    def __post_init__(self) -> None:
        self.settings.workspace.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(self.settings.tables_dir)
        self.engine = open_engine(self.settings)  # a cluster connects on first use
        create_tracking_db(self.settings.mlflow_uri)
        self.audit = audit_log(self.settings, os.environ)
        self.registry = Registry(self.lake, self.settings.mlflow_uri, audit=self.audit)

    @contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold the workspace's run lock while `what` runs; refuse if it is held.

        Two runs on one workspace would interleave stage writes and alias moves;
        the second is refused at once with the first one's pid and command. The
        lock is an advisory `flock`: it ends with the process, even on SIGKILL.
        """
        path = self.settings.workspace / ".run.lock"
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                msg = (
                    f"workspace {self.settings.workspace} is busy: {holder}; "
                    "wait for it to finish (one run per workspace at a time)"
                )
                raise ConfigError(msg) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} running {what}")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)


# one PostgreSQL advisory lock key for MLflow's schema setup (any fixed bigint)
_SCHEMA_LOCK = 0x414953_4D4C46


def create_tracking_db(uri: str) -> None:
    """Create the tracking database's schema once, safely under concurrency.

    SQLite: built atomically (below). PostgreSQL: MLflow creates or migrates its
    tables on first use, and two processes doing so at once collide ("relation
    alembic_version already exists"); an advisory lock makes them take turns.
    Other URIs: nothing to do.

    MLflow's schema migrations on SQLite are not one transaction: a process
    killed while they run leaves `_alembic_tmp_*` tables that make every later
    open fail. Building the schema in a side file and renaming it into place
    means a killed first run leaves either no database or a complete one.
    """
    if uri.startswith("postgresql"):
        _create_postgres_schema(uri)
        return
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    side = path.with_name(f".{path.name}.{os.getpid()}.creating")
    side.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{side}").search_experiments()
    os.replace(side, path)


def _create_postgres_schema(uri: str) -> None:
    """MLflow's tables in the PostgreSQL database of `uri`, one process at a time."""
    url = make_url(uri)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(libpq, autocommit=True, connect_timeout=10) as con:
            con.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                MlflowClient(tracking_uri=uri).search_experiments()
            finally:
                con.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
    except psycopg.Error as exc:
        where = url.render_as_string(hide_password=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
        msg = f"tracking_uri: cannot use the database at {where}: {first}"
        raise RegistryError(msg) from exc
