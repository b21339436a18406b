"""The storage and registry a command works against, built from settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.settings import Settings


@dataclass
class Workspace:
    """The storage and registry a run works against, built from settings."""

    settings: Settings
    lake: Lake = field(init=False)
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self.settings.workspace.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(self.settings.tables_dir)
        create_tracking_db(self.settings.mlflow_uri)
        self.registry = Registry(self.lake, self.settings.mlflow_uri)


def create_tracking_db(uri: str) -> None:
    """Create a new SQLite tracking database atomically (no-op otherwise).

    MLflow's schema migrations on SQLite are not one transaction: a process
    killed while they run leaves `_alembic_tmp_*` tables that make every later
    open fail. Building the schema in a side file and renaming it into place
    means a killed first run leaves either no database or a complete one.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    side = path.with_name(f".{path.name}.{os.getpid()}.creating")
    side.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{side}").search_experiments()
    os.replace(side, path)
