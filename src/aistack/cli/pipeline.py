"""`aistack run`, `tune`, `use-cases`, `quarantine`, `tables`: the data flow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from aistack.cli._app import (
    Need,
    SeedOpt,
    TrackingOpt,
    UseCaseArg,
    WorkspaceOpt,
    app,
    console,
    open_workspace,
)
from aistack.errors import ConfigError
from aistack.flow import STAGES, Stage

if TYPE_CHECKING:
    from aistack.contract import AnyUseCase
    from aistack.workspace import Workspace


def parse_params(use_case: AnyUseCase, args: list[str]) -> BaseModel:
    """Turn `--days 30 --bad-rows=5` into the use case's validated params model."""
    values: dict[str, Any] = {}
    fields = use_case.params.model_fields
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: expected --option value")
        key, _, value = token[2:].partition("=")
        name = key.replace("-", "_")
        if name not in fields:
            known = ", ".join("--" + f.replace("_", "-") for f in fields)
            raise ConfigError(
                f"--{key}: not an option of use case {use_case.name} ({known})"
            )
        if not value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"--{key}: expected a value")
            value = args[i + 1]
            i += 1
        values[name] = value
        i += 1
    try:
        return use_case.params.model_validate(values)
    except ValidationError as exc:
        parts = [
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("; ".join(parts)) from exc


@app.command(
    "run",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],  # --help also lists the use case's own options
    },
)
def run_command(
    ctx: typer.Context,
    use_case: Annotated[
        str | None, typer.Argument(help="Registered use case, e.g. fraud.")
    ] = None,
    *,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage", "-s", help=f"Stage(s) to run: {', '.join(STAGES)} (default all)."
        ),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(help="Batch scoring: first timestamp (default: test period)."),
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(help="Batch scoring: end (exclusive).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars.")
    ] = False,
) -> None:
    """Run a use case end to end, or chosen stages; other options go to the use case."""
    from aistack.contract import get_any_use_case

    if use_case is None or use_case in ("--help", "-h") or "--help" in ctx.args:
        console.print(ctx.get_help())
        if use_case not in (None, "--help", "-h"):
            console.print(params_table(get_any_use_case(use_case)))
        return
    from aistack.cli.render import run_summary
    from aistack.runner import new_progress, run

    uc = get_any_use_case(use_case)
    stages = _stages(stage)
    params = parse_params(uc, list(ctx.args))
    if (start is None) != (end is None):
        raise ConfigError("--start and --end: give both or neither")
    if start is not None and end is not None and start >= end:
        raise ConfigError("--end: must be after --start")
    ws = open_workspace(workspace, tracking_uri, seed, *stage_needs(uc.name, stages))
    window = (start, end) if start is not None and end is not None else None
    report = run(
        uc,
        ws,
        params,
        stages=stages,
        progress=new_progress(enabled=not quiet),
        score_range_=window,
    )
    run_summary(console, uc, ws, report)


@app.command("tune")
def tune_command(
    use_case: UseCaseArg,
    *,
    trainer: Annotated[
        list[str] | None,
        typer.Option(help="Trainer(s) to tune (default: every one with a space)."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Budget: trials per trainer.")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(min=1, help="Budget: seconds per trainer.")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Tune hyperparameters (Optuna TPE, pruning) on validation folds; `run` then
    trains with the chosen values. Default budget: 20 trials."""
    from aistack.contract import get_use_case
    from aistack.runner import tune

    if trials is not None and seconds is not None:
        raise ConfigError("--trials and --seconds: give one budget, not both")
    uc = get_use_case(use_case, action="aistack tune")
    ws = open_workspace(workspace, tracking_uri, seed, ("train", uc.name))
    results = tune(uc, ws, trainers=trainer or (), trials=trials, seconds=seconds)
    table = Table("trainer", "trials", "pruned", "best", "parameters", "seconds")
    for r in results:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.best_params.items()
        )
        table.add_row(
            r.trainer,
            str(r.trials),
            str(r.pruned),
            f"{r.metric}={r.best_value:.4f}",
            params,
            f"{r.seconds:.1f}",
        )
    console.print(table)
    console.print("`aistack run` trains with these parameters from now on.")


def params_table(use_case: AnyUseCase) -> Table:
    """The use case's own run options, from its params model."""
    table = Table(title=f"options of use case {use_case.name}")
    for column in ("option", "type", "default", "description"):
        table.add_column(column)
    for name, info in use_case.params.model_fields.items():
        annotation = getattr(info.annotation, "__name__", str(info.annotation))
        table.add_row(
            "--" + name.replace("_", "-"),
            annotation,
            "" if info.is_required() else str(info.default),
            info.description or "",
        )
    return table


def stage_needs(use_case: str, stages: Sequence[Stage] | None) -> list[Need]:
    """Grants a run of `stages` (None: all) needs: write per layer, then train."""
    chosen = stages or list(STAGES)
    needs: list[Need] = [
        ("write", f"{s}.{use_case}")
        for s in ("bronze", "silver", "gold")
        if ("ingest" if s == "bronze" else s) in chosen
    ]
    if "train" in chosen or "score" in chosen:
        needs.append(("train", use_case))
    return needs


def _stages(stage: list[str] | None) -> list[Stage]:
    if not stage:
        return list(STAGES)
    unknown = [s for s in stage if s not in STAGES]
    if unknown:
        raise ConfigError(
            f"--stage: unknown {', '.join(unknown)} (expected {', '.join(STAGES)})"
        )
    return [s for s in STAGES if s in stage]


@app.command("use-cases")
def use_cases_command() -> None:
    """Every registered use case, and any that failed to load (with the reason)."""
    from aistack.contract.discovery import discover_all

    found, broken = discover_all()
    table = Table(title="use cases (entry-point group aistack.use_cases)")
    for column in ("name", "status", "task", "views", "trainers", "description"):
        table.add_column(column)
    for name, uc in sorted(found.items()):
        views = getattr(uc, "views", ())
        table.add_row(
            name,
            "[green]ok[/]",
            uc.task,
            ", ".join(v.name for v in views) or "none",
            ", ".join(t.name for t in uc.trainers),
            uc.description,
        )
    for name in sorted(broken):
        table.add_row(name, "[red]broken[/]", "", "", "", "(reason below)")
    console.print(table)
    for name, reason in sorted(broken.items()):
        console.print(f"[red]broken[/] {name}: {reason}", soft_wrap=True)


@app.command("quarantine")
def quarantine_command(
    use_case: UseCaseArg,
    *,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown per table.")] = 20,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="First move rows held only for a reference that has since arrived "
            "(e.g. a late customer) to silver, keeping the row accounting.",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Rejected rows of the use case's silver tables: column, check, reason, batch."""
    from aistack.contract import get_any_use_case
    from aistack.lake.silver import quarantine_table

    uc = get_any_use_case(use_case)
    ws = open_workspace(
        workspace,
        tracking_uri,
        seed,
        ("write", "silver.*") if retry else ("read", f"quarantine.{uc.name}"),
    )
    if retry:
        _retry(ws, uc)
    for spec in uc.silver:
        name = quarantine_table(spec)
        if not ws.lake.exists(name):
            console.print(f"{name}: no quarantined rows")
            continue
        rows = ws.lake.read(
            name, columns=["_batch_id", "_row", "_column", "_check", "_reason"]
        ).to_pylist()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["_check"]] = counts.get(row["_check"], 0) + 1
        table = Table(
            title=f"{name}: {len(rows):,} rows ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
            + ")"
        )
        for column in ("batch", "row", "column", "check", "reason"):
            table.add_column(column)
        for row in rows[:limit]:
            table.add_row(
                str(row["_batch_id"]),
                str(row["_row"]),
                row["_column"] or "",
                row["_check"] or "",
                row["_reason"] or "",
            )
        console.print(table)


def _retry(ws: Workspace, uc: AnyUseCase) -> None:
    from aistack.lake.silver import retry_quarantine

    table = Table(title=f"{uc.name}: quarantine retry (late references)")
    for column in ("silver table", "released to silver", "still quarantined"):
        table.add_column(column)
    with ws.exclusive(f"aistack quarantine {uc.name} --retry"):
        for spec in uc.silver:
            if spec.references:
                done = retry_quarantine(ws.lake, spec, processed_at=datetime.now(UTC))
                table.add_row(
                    done.table, f"{done.released_rows:,}", f"{done.still_quarantined:,}"
                )
    console.print(table)


@app.command("tables")
def tables_command(
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """List the workspace's Delta tables with version and rows."""
    ws = open_workspace(workspace, tracking_uri, seed, ("read", "*"))
    from aistack.cli.render import tables_table

    console.print(tables_table(ws.lake.tables()))
