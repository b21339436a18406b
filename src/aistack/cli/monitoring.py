"""`aistack monitor`, `consistency`, `abtest`: how the served model does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


@app.command("monitor")
def monitor_command(
    use_case: UseCaseArg,
    *,
    hours: Annotated[
        float | None,
        typer.Option(min=0.001, help="Current window: the last N hours of the log."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="HTML report path (default: workspace).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Drift and live performance of the champion: HTML report, alerts, summary
    (a ranking use case: catalogue coverage and popularity drift per day)."""
    from aistack.cli.render import frame_table, monitor_table
    from aistack.contract import RankingUseCase, get_any_use_case
    from aistack.monitoring.monitor import run_monitor

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("read", f"ops.{uc.name}_*"))
    path = report or ws.settings.workspace / "reports" / f"{uc.name}-monitor.html"
    window = timedelta(hours=hours) if hours is not None else None
    if isinstance(uc, RankingUseCase):
        from aistack.monitoring.recommendations import monitor_recommendations

        since = datetime.now(UTC) - window if window is not None else None
        served = monitor_recommendations(ws, uc, report_path=path, since=since)
        console.print(frame_table(served.daily, title=f"{uc.name}: served per day"))
        signals = ", ".join(f"{k} {v:.3f}" for k, v in served.observed.items())
        console.print(f"window: {signals}")
        for event in served.alerts:
            console.print(
                f"[red]alert[/] {event.rule}: {event.state} ({event.value:.4g})"
            )
        console.print(f"report: {served.report}", soft_wrap=True)
        return
    result = run_monitor(ws, uc, window=window, report_path=path)
    console.print(monitor_table(result))
    for event in result.alerts:
        console.print(f"[red]alert[/] {event.rule}: {event.state} ({event.value:.4g})")
    if result.rollout_action:
        console.print(f"[yellow]{result.rollout_action}[/]")
    console.print(f"report: {result.report}", soft_wrap=True)


@app.command("consistency")
def consistency_command(
    use_case: UseCaseArg,
    *,
    hours: Annotated[
        float | None,
        typer.Option(min=0.001, help="Only predictions logged in the last N hours."),
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Served features against their offline values, for logged predictions whose
    events have since been ingested: per feature mismatch and missing rates."""
    from aistack.contract import get_use_case
    from aistack.monitoring.consistency import check_consistency

    uc = get_use_case(use_case, action="aistack consistency")
    ws = open_workspace(workspace, tracking_uri, seed, ("read", f"ops.{uc.name}_*"))
    since = datetime.now(UTC) - timedelta(hours=hours) if hours is not None else None
    report = check_consistency(ws.lake, uc, since=since)
    table = Table(
        title=f"{uc.name}: online/offline consistency ({report.compared:,} of "
        f"{report.logged:,} logged predictions ingested since; {report.late:,} late)"
    )
    for column in (
        "feature",
        "compared",
        "mismatch rate",
        "missing rate",
        "max |diff|",
    ):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for f in report.features:
        style = "red" if f.mismatch_rate or f.missing_rate else None
        table.add_row(
            f.feature,
            f"{f.compared:,}",
            f"{f.mismatch_rate:.4%}",
            f"{f.missing_rate:.4%}",
            f"{f.max_abs_diff:.3g}",
            style=style,
        )
    console.print(table)


@app.command("abtest")
def abtest_command(
    use_case: UseCaseArg,
    *,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Champion vs canary challenger on the declared business metric (a ranking
    use case: click-through rate on clicks simulated from held-out ratings)."""
    from aistack.cli.render import abtest_table
    from aistack.contract import RankingUseCase, get_any_use_case
    from aistack.monitoring.monitor import ab_test
    from aistack.monitoring.ranking import ranking_ab_test

    uc = get_any_use_case(use_case)
    ws = open_workspace(workspace, tracking_uri, seed, ("read", f"ops.{uc.name}_*"))
    if isinstance(uc, RankingUseCase):
        console.print(abtest_table(ranking_ab_test(ws, uc)))
        return
    console.print(abtest_table(ab_test(ws, uc)))
