"""`aistack forget`, `card`: a subject's right to erasure, a model's card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aistack.cli._app import (
    SeedOpt,
    TrackingOpt,
    UseCaseArg,
    WorkspaceOpt,
    app,
    console,
    open_workspace,
)


@app.command("forget")
def forget_command(
    use_case: UseCaseArg,
    subject_id: Annotated[
        str, typer.Argument(help="The subject's id as the source carries it.")
    ],
    *,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Erase a subject everywhere (bronze to prediction log), then vacuum."""
    import os
    from datetime import UTC, datetime

    from aistack.contract import get_any_use_case
    from aistack.errors import ConfigError
    from aistack.governance.pii import cipher_for, forget

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed)
    cipher = cipher_for(uc, ws.settings, os.environ)
    if cipher is None:
        msg = f"{uc.name}: declares no PII column, so it holds no subject to forget"
        raise ConfigError(msg)
    with ws.exclusive(f"aistack forget {uc.name}"):
        result = forget(ws, uc, subject_id, cipher=cipher, now=datetime.now(UTC))
    table = Table(title=f"{uc.name}: erasure {result.erasure_id}")
    for column in ("table", "rows deleted", "version", "files vacuumed"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, rows in sorted(result.rows.items()):
        table.add_row(
            name,
            f"{rows:,}",
            str(result.versions[name]),
            str(result.vacuumed_files.get(name, 0)),
        )
    console.print(table)
    console.print(f"online store rows deleted: {result.online_rows}")
    models = ", ".join(result.models) or "none"
    console.print(f"erasure listed in the lineage of: {models}", soft_wrap=True)
    if not result.total_rows:
        console.print("[yellow]no row of this subject was found[/]")


@app.command("card")
def card_command(
    use_case: UseCaseArg,
    *,
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Model version (default: the champion)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="HTML path (default: workspace reports/).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Write the model card of a model version: one self-contained HTML page."""
    from aistack.contract import get_use_case
    from aistack.errors import RegistryError
    from aistack.runner import card_path
    from aistack.training.card import write_model_card

    uc = get_use_case(use_case, action="aistack card")
    ws = open_workspace(workspace, tracking_uri, seed)
    if version is None:
        champion = ws.registry.version_of(uc.name, "champion")
        if champion is None:
            msg = f"--version: {uc.name} has no champion; name a version"
            raise RegistryError(msg)
        version = champion
    path = output or card_path(ws, uc, version)
    written = write_model_card(ws.registry.client, uc, version, path)
    console.print(f"model card: {written}", soft_wrap=True)
