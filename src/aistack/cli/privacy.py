"""`aistack forget`, `show`, `card`: erasure, masked reads, model cards."""

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
    authorize,
    console,
    open_workspace,
)
from aistack.settings import load_settings


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
    from aistack.erasure import forget
    from aistack.errors import ConfigError
    from aistack.governance.pii import cipher_for

    uc = get_any_use_case(use_case)
    settings = load_settings(workspace=workspace, tracking_uri=tracking_uri, seed=seed)
    # finding the subject decrypts bronze; deleting writes every layer
    principal = authorize(settings, "read_pii")
    ws = open_workspace(
        workspace, tracking_uri, seed, ("write", "bronze.*"), ("write", "silver.*")
    )
    cipher = cipher_for(uc, ws.settings, os.environ)
    if cipher is None:
        msg = f"{uc.name}: declares no PII column, so it holds no subject to forget"
        raise ConfigError(msg)
    with ws.exclusive(f"aistack forget {uc.name}"):
        result = forget(
            ws,
            uc,
            subject_id,
            cipher=cipher,
            now=datetime.now(UTC),
            principal=principal.name,
        )
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
    console.print(f"online aggregation state events deleted: {result.state_events}")
    console.print(
        f"batches recounted in ops.batch_accounting: {result.accounted_batches}"
    )
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


@app.command("show")
def show_command(
    use_case: UseCaseArg,
    table: Annotated[
        str, typer.Argument(help="A table of the use case, e.g. silver.patients.")
    ],
    *,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown.")] = 20,
    column: Annotated[
        list[str] | None,
        typer.Option("--column", "-c", help="Columns shown (default: all)."),
    ] = None,
    reveal: Annotated[
        bool,
        typer.Option("--reveal", help="Decrypt PII columns (needs read_pii; audited)."),
    ] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """The first rows of a table; PII columns masked unless --reveal by a
    principal holding read_pii (each reveal is recorded in the audit log)."""
    import os

    from aistack.contract import get_any_use_case
    from aistack.errors import ConfigError
    from aistack.governance.audit import audit_event
    from aistack.governance.pii import cipher_for, read_table

    uc = get_any_use_case(use_case)
    settings = load_settings(workspace=workspace, tracking_uri=tracking_uri, seed=seed)
    principal = authorize(settings, "read", table)
    if reveal:
        principal = authorize(settings, "read_pii")
    ws = open_workspace(workspace, tracking_uri, seed)
    cipher = cipher_for(uc, ws.settings, os.environ) if reveal else None
    data = read_table(ws.lake, uc, table, reveal_pii=reveal, cipher=cipher)
    unknown = sorted(set(column or ()) - set(data.column_names))
    if unknown:
        raise ConfigError(f"--column: {', '.join(unknown)} not in {table}")
    rows = data.slice(0, limit).select(column) if column else data.slice(0, limit)
    if reveal:
        audit_event(
            ws.audit,
            principal,
            "pii_decrypt",
            use_case=uc.name,
            table=table,
            rows=rows.num_rows,
        )
    shown = Table(title=f"{table}: {rows.num_rows:,} of {data.num_rows:,} rows")
    for name in rows.column_names:
        shown.add_column(name)
    for row in rows.to_pylist():
        shown.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(shown)
