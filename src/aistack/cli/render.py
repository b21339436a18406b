"""Rich tables for what the CLI prints: runs, tables, models, lineage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from aistack.contract import RankingUseCase, UseCase

if TYPE_CHECKING:  # types only: `aistack tables` must not load MLflow or pandas
    import pandas as pd

    from aistack.lake.delta import TableInfo
    from aistack.monitoring.abtest import ABResult
    from aistack.monitoring.monitor import MonitorResult
    from aistack.registry.aliases import AliasEvent
    from aistack.runner import RunReport
    from aistack.workspace import Workspace


def tables_table(tables: Sequence[TableInfo], title: str = "Delta tables") -> Table:
    """Every table with its version and row count."""
    table = Table(title=title)
    for column, justify in (("table", "left"), ("version", "right"), ("rows", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for info in tables:
        table.add_row(info.name, str(info.version), f"{info.rows:,}")
    return table


def run_summary(
    console: Console,
    use_case: UseCase | RankingUseCase,
    ws: Workspace,
    report: RunReport,
) -> None:
    """The end-of-run summary: tables, quarantine, models, champion, MLflow."""
    console.print(tables_table(ws.lake.tables(), title=f"{use_case.name}: tables"))
    quarantined = {s.table: s.by_check for s in report.silver if s.by_check}
    if quarantined:
        table = Table(title="quarantined rows (this run) by check")
        table.add_column("silver table")
        table.add_column("check")
        table.add_column("rows", justify="right")
        for name, checks in quarantined.items():
            for check, rows in sorted(checks.items()):
                table.add_row(name, check, str(rows))
        console.print(table)
    for result in report.silver:
        for note in result.notes:
            console.print(f"[yellow]note[/] {result.table}: {note}")
    if report.gold:
        table = Table(title="gold features (this run)")
        table.add_column("table")
        table.add_column("version", justify="right")
        table.add_column("rows written", justify="right")
        for g in report.gold:
            written = "unchanged (same inputs)" if g.skipped else f"{g.new_rows:,}"
            table.add_row(g.table, str(g.version), written)
        console.print(table)
    if report.candidates:
        console.print(candidates_table(use_case, report))
    champion = ws.registry.version_of(use_case.name, "champion")
    console.print(f"champion: [bold]{use_case.name}[/] version [bold]{champion}[/]")
    if report.evaluation_report is not None:
        console.print(f"evaluation report: {report.evaluation_report}", soft_wrap=True)
    if report.scoring is not None:
        s = report.scoring
        action = "unchanged" if s.skipped else f"{s.rows:,} rows scored"
        console.print(
            f"batch scoring: {s.table} v{s.version} "
            f"({action}, model v{s.model_version})"
        )
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    console.print(f"stage times: {timings}")
    console.print(f"MLflow store: {ws.settings.mlflow_uri}", soft_wrap=True)
    console.print(  # commands are printed unwrapped, to copy and paste
        f"open it with: mlflow ui --backend-store-uri {ws.settings.mlflow_uri} "
        "--host 127.0.0.1 --port 5000",
        soft_wrap=True,
        highlight=False,
    )


def history_table(events: Sequence[AliasEvent]) -> Table:
    """Alias moves, oldest first."""
    table = Table(title="alias history")
    for column in ("when (UTC)", "alias", "from", "to", "who", "why"):
        table.add_column(column)
    for e in events:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.alias,
            "-" if e.from_version is None else str(e.from_version),
            "-" if e.to_version is None else str(e.to_version),
            e.actor,
            e.reason,
        )
    return table


def monitor_table(result: MonitorResult) -> Table:
    """Per-column drift verdicts and live performance, in one table."""
    table = Table(
        title=(
            f"drift: {sum(d.drifted for d in result.drift)} of {len(result.drift)} "
            f"columns drifted ({result.current_rows:,} served rows vs "
            f"{result.reference_rows:,} training rows, champion v{result.champion})"
        )
    )
    for column in (
        "column",
        "kind",
        "test",
        "statistic",
        "threshold",
        "PSI",
        "drifted",
    ):
        table.add_column(column)
    for d in result.drift:
        table.add_row(
            d.column,
            d.kind,
            d.test,
            f"{d.statistic:.4g}",
            f"{d.threshold:g}",
            "-" if d.psi is None else f"{d.psi:.3f}",
            "[red]yes[/]" if d.drifted else "no",
        )
    perf = result.performance
    if not perf.empty:
        metrics = [c for c in perf.columns if c not in ("day", "n")]
        trained = result.training_metrics
        line = ", ".join(
            f"{m} {perf[m].mean():.4f} (training {trained.get(m, float('nan')):.4f})"
            for m in metrics
        )
        table.caption = f"live performance over {len(perf)} labelled days: {line}"
    return table


def abtest_table(result: ABResult) -> Table:
    """Arms, difference with its interval, p-value and the sample size needed."""
    table = Table(title=f"A/B: {result.metric} ({result.test})")
    for column in ("arm", "rows", "value"):
        table.add_column(column)
    table.add_row("A champion", f"{result.n_a:,}", f"{result.value_a:.4f}")
    table.add_row("B challenger", f"{result.n_b:,}", f"{result.value_b:.4f}")
    verdict = "significant" if result.significant else "not significant"
    table.caption = (
        f"B - A = {result.difference:+.4f} "
        f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}] at {1 - result.alpha:.0%}, "
        f"p = {result.p_value:.4g} ({verdict}); rows needed per arm for the declared "
        f"effect: {result.required_per_arm:,}"
        + ("" if result.enough_data else " (not reached yet)")
    )
    return table


def candidates_table(use_case: UseCase | RankingUseCase, report: RunReport) -> Table:
    """Each trained model's test metrics and gate verdict."""
    if isinstance(use_case, RankingUseCase):
        metrics = use_case.metric_names
        title = "models trained (test split, full ranking, seen items excluded)"
    else:
        metrics = list(use_case.metrics)
        title = "models trained (test period after the label delay)"
    table = Table(title=title)
    for column in ("model", "version", *metrics, "gates"):
        table.add_column(
            column, justify="left" if column in ("model", "gates") else "right"
        )
    for c in report.candidates:
        failed = [g.name for g in c.gates if not g.passed]
        gates = (
            "[green]all passed[/]"
            if not failed
            else "[red]failed: " + ", ".join(failed)
        )
        table.add_row(
            c.trainer,
            str(c.version),
            *(f"{c.metrics.get(m, float('nan')):.4f}" for m in metrics),
            gates,
        )
    return table


def frame_table(frame: pd.DataFrame, *, title: str) -> Table:
    """A data frame as a table: numbers right-aligned, floats to 4 digits."""
    import pandas as pd

    table = Table(title=title)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table
