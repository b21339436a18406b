"""The typer app, its shared options, and the entry point.

Command modules import their heavy parts (MLflow, the models, the server) inside
each command, so `aistack --help` answers without loading them. Bad input or
configuration prints one line naming the field and the reason and exits with
code 2, never a traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from aistack.errors import AIStackError
from aistack.settings import load_settings

if TYPE_CHECKING:
    from aistack.governance.principals import Principal
    from aistack.settings import Settings
    from aistack.workspace import Workspace

app = typer.Typer(
    name="aistack",
    help="AI Stack: raw data to a served, monitored model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# A pipe or CI log gets a wide, stable layout; a terminal keeps its own width.
console = Console(width=None if sys.stdout.isatty() else 120)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace folder (AISTACK_WORKSPACE)."),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow URI (AISTACK_TRACKING_URI)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (AISTACK_SEED).")]
UseCaseArg = Annotated[str, typer.Argument(help="Registered use case.")]
OnlineUrlOpt = Annotated[
    str | None, typer.Option(help="Online store URL (AISTACK_ONLINE_URL).")
]


Need = tuple[str, str | None]
"""A grant a command needs: (action, use case or table)."""


def open_workspace(
    workspace: Path | None,
    tracking_uri: str | None,
    seed: int | None,
    *needs: Need,
) -> Workspace:
    """The workspace the shared options name (settings from flags, env, file),
    once the caller is granted every one of `needs` (refused: exit 2)."""
    settings = load_settings(workspace=workspace, tracking_uri=tracking_uri, seed=seed)
    for action, on in needs:
        authorize(settings, action, on)
    from aistack.workspace import Workspace  # MLflow: only once allowed

    return Workspace(settings)


def authorize(settings: Settings, action: str, on: str | None = None) -> Principal:
    """The caller (token in AISTACK_TOKEN), refused unless granted `action` on `on`.

    With no policy set, the caller is the local user, admin.
    """
    from aistack.governance.principals import Policy

    token = settings.token.get_secret_value() if settings.token else None
    principal = Policy.load(settings.policy).authenticate(token)
    principal.require(action, on)
    return principal


def main() -> None:
    """Entry point: run the app, turning AI Stack errors into one line and exit 2."""
    # MLflow's own chatter (pickle advice, pip resolution) is not the user's concern.
    # MLflow sets its loggers' level when it is imported (lazily, by a command),
    # from this variable; the user's own setting wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    code: int | str | None = 0
    try:
        app(standalone_mode=True)
    except AIStackError as exc:
        Console(stderr=True).print(
            f"[red]error:[/] {exc}", highlight=False, soft_wrap=True
        )
        code = 2
    except SystemExit as done:
        code = done.code
    _exit(code)


def _exit(code: int | str | None) -> NoReturn:
    """Leave once Python's own shutdown work is done, skipping native libraries'
    static destructors: they race with those libraries' worker threads at
    interpreter teardown (seen here: SIGABRT, "terminate called without an
    active exception", in 1 of 4 runs of a finished `aistack quarantine
    --retry`). Threads are joined and exit handlers run as in a normal exit."""
    threading._shutdown()  # type: ignore[attr-defined]  # as Py_Finalize does
    atexit._run_exitfuncs()
    if isinstance(code, str):
        sys.stderr.write(f"{code}\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
