"""The storage and registry a command works against, built from settings."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from aistack.engine import DaskEngine, EmbeddedEngine, open_engine
from aistack.errors import ConfigError, RegistryError
from aistack.governance.audit import AuditLog, audit_log
from aistack.lake.delta import Lake
from aistack.locks import file_lock, postgres_lock
from aistack.settings import Settings

if TYPE_CHECKING:
    from aistack.registry.aliases import Registry


@dataclass
class Workspace:
    """The storage and registry a run works against, built from settings."""

    settings: Settings
    lake: Lake = field(init=False)
    audit: AuditLog = field(init=False)
    engine: EmbeddedEngine | DaskEngine = field(init=False)

    def __post_init__(self) -> None:
        self.settings.workspace.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(self.settings.tables_dir)
        self.engine = open_engine(self.settings)  # a cluster connects on first use
        self.audit = audit_log(self.settings, os.environ)

    @cached_property
    def registry(self) -> Registry:
        """The model registry (MLflow), opened on first use: commands that only
        read tables never load MLflow nor create its database."""
        from aistack.registry.aliases import Registry

        create_tracking_db(self.settings.mlflow_uri)
        return Registry(self.lake, self.settings.mlflow_uri, audit=self.audit)

    @contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold the workspace's run lock while `what` runs; refuse if it is held.

        Two runs on one workspace would interleave stage writes and alias moves;
        the second is refused at once with the first one's pid and command. The
        lock is an advisory `flock`: it ends with the process, even on SIGKILL.
        """
        path = self.settings.workspace / ".run.lock"

        def refuse(holder: str) -> ConfigError:
            msg = (
                f"workspace {self.settings.workspace} is busy: "
                f"{holder or 'another process'}; wait for it to finish "
                "(one run per workspace at a time)"
            )
            return ConfigError(msg)

        with file_lock(path, holder=f"pid {os.getpid()} running {what}", refuse=refuse):
            yield


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
    template = _sqlite_template()
    if template is None:
        _mlflow_schema(f"sqlite:///{side}")
    else:
        shutil.copyfile(template, side)
        _own_default_experiment(side)
    os.replace(side, path)


def _mlflow_schema(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()


def _sqlite_template() -> Path | None:
    """An empty MLflow SQLite database of the installed MLflow's schema, built once
    per MLflow version in the user's cache (MLflow's ~50 migrations take 1.5-3.5 s
    per new database; a copy takes milliseconds). None when the cache is not
    writable: the caller then builds the schema in place."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    template = root / "aistack" / f"mlflow-{version('mlflow')}-empty.db"
    if template.exists():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        side = template.with_name(f".{template.name}.{os.getpid()}.creating")
        side.unlink(missing_ok=True)
        _mlflow_schema(f"sqlite:///{side}")
        os.replace(side, template)  # atomic: a reader sees none or all of it
    except OSError:
        return None
    return template


def _own_default_experiment(path: Path) -> None:
    """Give the copied database's Default experiment what MLflow would have given
    it here: the artifact location `./mlruns/0` of this process, and now."""
    now = int(time.time() * 1000)
    location = str(Path.cwd() / "mlruns" / "0")
    with sqlite3.connect(path) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
            "last_update_time = ? WHERE experiment_id = 0",
            (location, now, now),
        )
    con.close()


def _create_postgres_schema(uri: str) -> None:
    """MLflow's tables in the PostgreSQL database of `uri`, one process at a time."""
    import psycopg
    from sqlalchemy.engine import make_url

    try:
        with postgres_lock(uri, _SCHEMA_LOCK):
            _mlflow_schema(uri)
    except psycopg.Error as exc:
        where = make_url(uri).render_as_string(hide_password=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
        msg = f"tracking_uri: cannot use the database at {where}: {first}"
        raise RegistryError(msg) from exc
