"""`aistack models`, `lineage`, `promote`, `rollback`, `rollout`: the registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

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
from aistack.errors import ConfigError

if TYPE_CHECKING:
    from aistack.registry.rollout import Mode


@app.command("models")
def models_command(
    use_case: UseCaseArg,
    *,
    history: Annotated[
        bool, typer.Option("--history", help="Show every alias move.")
    ] = False,
    at: Annotated[
        datetime | None,
        typer.Option("--at", help="Which version was champion at this time (UTC)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Model versions with their aliases and metrics; --history for alias moves."""
    from aistack.cli.render import history_table
    from aistack.contract import RankingUseCase, get_any_use_case
    from aistack.training.tracking import tracking

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("read", f"registry.{uc.name}"))
    if at is not None:
        when = at if at.tzinfo else at.replace(tzinfo=UTC)
        version = ws.registry.version_at(uc.name, "champion", when)
        console.print(f"champion of {uc.name} at {when.isoformat()}: version {version}")
        return
    if history:
        console.print(history_table(ws.registry.history(uc.name)))
        return
    client = ws.registry.client
    table = Table(title=f"registered model {uc.name}")
    names = uc.metric_names if isinstance(uc, RankingUseCase) else list(uc.metrics)
    for column in ("version", "aliases", "run", *names):
        table.add_column(column)
    with tracking(ws.settings.mlflow_uri):
        versions = client.search_model_versions(f"name = '{uc.name}'")
        aliases: dict[int, list[str]] = {}
        for alias in ("champion", "challenger"):
            held = ws.registry.version_of(uc.name, alias)
            if held is not None:
                aliases.setdefault(held, []).append(alias)
        for mv in sorted(versions, key=lambda v: int(v.version)):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            table.add_row(
                str(mv.version),
                ", ".join(aliases.get(int(mv.version), [])),
                mv.run_id or "-",
                *(f"{metrics.get(m, float('nan')):.4f}" for m in names),
            )
    console.print(table)


@app.command("lineage")
def lineage_command(
    use_case: UseCaseArg,
    alias: Annotated[str, typer.Option(help="Alias to trace.")] = "champion",
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Trace an alias: model version -> MLflow run -> input table@version."""
    from aistack.contract import get_any_use_case
    from aistack.training.tracking import lineage_of, tracking

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("read", f"registry.{uc.name}"))
    version = ws.registry.version_of(uc.name, alias)
    if version is None:
        raise ConfigError(f"alias {alias!r}: model {uc.name} has no such alias yet")
    with tracking(ws.settings.mlflow_uri):
        mv = ws.registry.client.get_model_version(uc.name, str(version))
        if not mv.run_id:
            raise ConfigError(f"{uc.name} version {version} was not logged by a run")
        tables = lineage_of(mv.run_id)
    console.print(f"{uc.name}@{alias} -> version {version} -> run {mv.run_id}")
    for name, table_version in sorted(tables.items()):
        console.print(f"    <- {name}@{table_version}")


@app.command("promote")
def promote_command(
    use_case: UseCaseArg,
    version: Annotated[
        int, typer.Argument(help="Model version to make champion.", min=1)
    ],
    *,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the alias history).")
    ] = "manual promotion",
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote a version that failed its gates."),
    ] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Make VERSION the champion by hand (recorded with who, when and why).

    A version that failed its gates needs `--force` and a `--reason`.
    """
    from aistack.contract import get_any_use_case

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("promote", uc.name))
    actor = authorize(ws.settings, "promote", uc.name).name
    event = ws.registry.promote(
        uc.name, version, actor=actor, reason=reason, force=force
    )
    console.print(f"champion of {uc.name}: {event.from_version} -> {event.to_version}")


@app.command("rollback")
def rollback_command(
    use_case: UseCaseArg,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the alias history).")
    ] = "manual rollback",
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Move champion back to the version it held before the current one."""
    from aistack.contract import get_any_use_case

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("rollback", uc.name))
    actor = authorize(ws.settings, "rollback", uc.name).name
    event = ws.registry.rollback(uc.name, actor=actor, reason=reason)
    console.print(f"champion of {uc.name}: {event.from_version} -> {event.to_version}")


@app.command("rollout")
def rollout_command(
    use_case: UseCaseArg,
    *,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Challenger scores every request.")
    ] = False,
    canary: Annotated[
        float | None,
        typer.Option(help="Percent of entities (sticky) answered by the challenger."),
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="End the rollout.")] = False,
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Version to roll out (default: challenger)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Start a shadow or canary rollout (servers pick it up), show or stop it."""
    from aistack.contract import get_any_use_case
    from aistack.registry.rollout import end_rollout, read_rollout, start_rollout

    uc = get_any_use_case(use_case)
    chosen = [shadow, canary is not None, stop].count(True)
    if chosen > 1:
        raise ConfigError("--shadow, --canary and --stop: choose one")
    need = ("rollout", uc.name) if chosen else ("read", f"registry.{uc.name}")
    ws = open_workspace(workspace, tracking_uri, seed, need)
    actor = authorize(ws.settings, *need).name
    if stop:
        ended = end_rollout(
            ws.registry,
            uc.name,
            status="stopped",
            reason=f"stopped by {actor}",
            actor=actor,
        )
        console.print(f"rollout: {ended}")
        return
    if chosen == 0:
        console.print(f"rollout: {read_rollout(ws.registry, uc.name)}")
        return
    mode: Mode = "shadow" if shadow else "canary"
    started = start_rollout(
        ws.registry,
        uc.name,
        mode=mode,
        share=100.0 if canary is None else canary,  # --canary 0 is refused, not 100 %
        version=version,
        actor=actor,
    )
    console.print(
        f"{started.mode} rollout of {uc.name} version {started.version}"
        + (f" for {started.share:g}% of entities" if mode == "canary" else "")
        + ": running servers pick it up at their next registry poll"
    )
