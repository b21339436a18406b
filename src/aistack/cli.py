"""The `aistack` command: parse arguments, build settings, call the platform.

Bad input or configuration prints one line naming the field and the reason and
exits with code 2, never a traceback.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import sys
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import start_http_server
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from aistack.api.server import serve
from aistack.contract import (
    AnyUseCase,
    RankingUseCase,
    UseCase,
    get_any_use_case,
    get_use_case,
)
from aistack.contract.discovery import discover_all
from aistack.errors import AIStackError, ConfigError
from aistack.features.online import materialize, open_store
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.lake.silver import quarantine_table
from aistack.monitoring.consistency import check_consistency
from aistack.monitoring.monitor import ab_test, run_monitor
from aistack.registry.rollout import Mode, end_rollout, read_rollout, start_rollout
from aistack.render import (
    abtest_table,
    history_table,
    monitor_table,
    run_summary,
    tables_table,
)
from aistack.runner import STAGES, Stage, new_progress, run, tune
from aistack.serving.stream import Consumer, RedisStreamSource, replay, stream_url
from aistack.settings import load_settings
from aistack.training.tracking import lineage_of, tracking
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
PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Stream partitions, by entity (AISTACK_STREAM_PARTITIONS)."
    ),
]


def _workspace(
    workspace: Path | None, tracking_uri: str | None, seed: int | None
) -> Workspace:
    return Workspace(
        load_settings(workspace=workspace, tracking_uri=tracking_uri, seed=seed)
    )


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
    if use_case is None or use_case in ("--help", "-h") or "--help" in ctx.args:
        console.print(ctx.get_help())
        if use_case not in (None, "--help", "-h"):
            console.print(params_table(get_any_use_case(use_case)))
        return
    uc = get_any_use_case(use_case)
    stages = _stages(stage)
    params = parse_params(uc, list(ctx.args))
    if (start is None) != (end is None):
        raise ConfigError("--start and --end: give both or neither")
    if start is not None and end is not None and start >= end:
        raise ConfigError("--end: must be after --start")
    ws = _workspace(workspace, tracking_uri, seed)
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
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    if trials is not None and seconds is not None:
        raise ConfigError("--trials and --seconds: give one budget, not both")
    uc = get_use_case(use_case, action="aistack tune")
    ws = _workspace(workspace, tracking_uri, seed)
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
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown per table.")] = 20,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Rejected rows of the use case's silver tables: column, check, reason, batch."""
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
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


@app.command("tables")
def tables_command(
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """List the workspace's Delta tables with version and rows."""
    ws = _workspace(workspace, tracking_uri, seed)
    console.print(tables_table(ws.lake.tables()))


@app.command("models")
def models_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
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
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    alias: Annotated[str, typer.Option(help="Alias to trace.")] = "champion",
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Trace an alias: model version -> MLflow run -> input table@version."""
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
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
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
    event = ws.registry.promote(
        uc.name, version, actor=getpass.getuser(), reason=reason, force=force
    )
    console.print(f"champion of {uc.name}: {event.from_version} -> {event.to_version}")


@app.command("rollback")
def rollback_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    reason: Annotated[
        str, typer.Option(help="Why (kept in the alias history).")
    ] = "manual rollback",
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Move champion back to the version it held before the current one."""
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
    event = ws.registry.rollback(uc.name, actor=getpass.getuser(), reason=reason)
    console.print(f"champion of {uc.name}: {event.from_version} -> {event.to_version}")


@app.command("materialize")
def materialize_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    online_url: Annotated[
        str | None, typer.Option(help="Online store URL (AISTACK_ONLINE_URL).")
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Bootstrap the aggregation state as of this event time (starts it "
            "over), so later events can be replayed.",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Load the online state: aggregation views' recent events and labels from
    silver (up to a watermark), SQL views' latest gold rows."""
    uc = get_use_case(use_case, action="aistack materialize")
    settings = load_settings(
        workspace=workspace, tracking_uri=tracking_uri, seed=seed, online_url=online_url
    )
    ws = Workspace(settings)
    table = Table(title=f"{uc.name}: online state")
    for column in ("view", "kind", "from", "watermark", "rows written"):
        table.add_column(column)
    if uc.aggregation_views:
        events = open_event_state(settings.online_url, settings.workspace, uc.name)
        for view in uc.aggregation_views:
            boot = bootstrap(ws.lake, events, uc, view, as_of=as_of)
            written = "unchanged" if boot.skipped else f"{boot.events:,} events"
            table.add_row(
                view.name,
                "aggregation (per request)",
                f"{view.source}@{boot.source_version}",
                boot.as_of.isoformat(sep=" "),
                written,
            )
    store = open_store(settings.online_url, settings.workspace, uc.name)
    for result in materialize(ws.lake, store, uc):
        written = "unchanged" if result.skipped else f"{result.entities:,} entities"
        table.add_row(
            result.view,
            "SQL (batch-only)",
            f"gold.{uc.name}_{result.view}@{result.gold_version}",
            "",
            written,
        )
    console.print(table)


@app.command("stream")
def stream_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name in the group (default: host-pid).")
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=100_000, help="Micro-batch size.")
    ] = 500,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics on PORT (at AISTACK_HOST)."),
    ] = None,
    until_idle: Annotated[
        bool, typer.Option(help="Stop once nothing is pending or undelivered.")
    ] = False,
    partition: Annotated[
        int, typer.Option(min=0, help="The stream partition this consumer reads.")
    ] = 0,
    partitions: PartitionsOpt = None,
    online_url: Annotated[
        str | None, typer.Option(help="Online store URL (AISTACK_ONLINE_URL).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Score events from the use case's Redis stream, exactly once, into the
    prediction log and the output stream (`aistack:<use case>:predictions`).

    One consumer per partition: a second one on a held partition waits as a
    standby until the holder's lease lapses."""
    uc = get_use_case(use_case, action="aistack stream")
    settings = load_settings(
        workspace=workspace,
        tracking_uri=tracking_uri,
        seed=seed,
        online_url=online_url,
        stream_partitions=partitions,
    )
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    source = RedisStreamSource(
        stream_url(settings),
        uc.name,
        consumer=name,
        partition=partition,
        partitions=settings.stream_partitions,
    )
    worker = Consumer(uc, settings, source, name, batch_size=batch)
    if metrics_port is not None:
        start_http_server(  # AISTACK_HOST=0.0.0.0 in a pod: scraped from outside
            metrics_port, addr=settings.host, registry=worker.metrics.registry
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    holder = source.acquire()
    if holder is not None:
        console.print(f"partition {partition} is held by {holder}: standing by")
    while holder is not None and not stop.wait(1.0):
        holder = source.acquire()
    console.print(f"consumer {name} of {source.names['events']}: scoring")
    done = worker.run(stop, until_idle=until_idle)
    console.print(f"consumer {name}: {done:,} events scored and committed")


@app.command("replay")
def replay_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    start: Annotated[
        datetime, typer.Option("--from", help="First event time (inclusive).")
    ],
    end: Annotated[datetime, typer.Option("--to", help="Last event time (exclusive).")],
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second (0: as fast as possible).")
    ] = 0.0,
    partitions: PartitionsOpt = None,
    online_url: Annotated[
        str | None, typer.Option(help="Online store URL (AISTACK_ONLINE_URL).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Push ingested events of a time range into the use case's stream, in time
    order, with each label after its delay."""
    uc = get_use_case(use_case, action="aistack replay")
    settings = load_settings(
        workspace=workspace,
        tracking_uri=tracking_uri,
        seed=seed,
        online_url=online_url,
        stream_partitions=partitions,
    )
    if end <= start:
        raise ConfigError("--to: must be after --from")
    ws = Workspace(settings)
    progress = new_progress(enabled=sys.stdout.isatty())
    with progress:
        task = progress.add_task("replay -> stream", total=None)
        result = replay(
            ws.lake,
            uc,
            stream_url(settings),
            start=start,
            end=end,
            rate=rate,
            partitions=settings.stream_partitions,
            progress=lambda n: progress.advance(task, n),
        )
    console.print(
        f"{result.events:,} events and {result.labels:,} labels pushed in "
        f"{result.seconds:.1f} s ({result.events / max(result.seconds, 1e-9):,.0f}/s)"
    )


@app.command("serve")
def serve_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    host: Annotated[
        str | None, typer.Option(help="Bind address (AISTACK_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (AISTACK_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    nodelay: Annotated[
        bool, typer.Option(help="Set TCP_NODELAY on connections (uvicorn#3149).")
    ] = True,
    online_url: Annotated[
        str | None, typer.Option(help="Online store URL (AISTACK_ONLINE_URL).")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Serve the champion over HTTP (FastAPI + uvicorn) on 127.0.0.1 by default."""
    uc = get_any_use_case(use_case)
    if isinstance(uc, UseCase) and uc.serving is None:
        raise ConfigError(f"use case {uc.name}: declares no serving request model")
    settings = load_settings(
        workspace=workspace,
        tracking_uri=tracking_uri,
        seed=seed,
        online_url=online_url,
        host=host,
        port=port,
    )
    serve(uc.name, settings, workers=workers, nodelay=nodelay)


@app.command("monitor")
def monitor_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    """Drift and live performance of the champion: HTML report, alerts, summary."""
    uc = get_use_case(use_case, action="aistack monitor")
    ws = _workspace(workspace, tracking_uri, seed)
    path = report or ws.settings.workspace / "reports" / f"{uc.name}-monitor.html"
    window = timedelta(hours=hours) if hours is not None else None
    result = run_monitor(ws, uc, window=window, report_path=path)
    console.print(monitor_table(result))
    for event in result.alerts:
        console.print(f"[red]alert[/] {event.rule}: {event.state} ({event.value:.4g})")
    if result.rollout_action:
        console.print(f"[yellow]{result.rollout_action}[/]")
    console.print(f"report: {result.report}", soft_wrap=True)


@app.command("consistency")
def consistency_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    uc = get_use_case(use_case, action="aistack consistency")
    ws = _workspace(workspace, tracking_uri, seed)
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


@app.command("rollout")
def rollout_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
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
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
    chosen = [shadow, canary is not None, stop].count(True)
    if chosen > 1:
        raise ConfigError("--shadow, --canary and --stop: choose one")
    actor = getpass.getuser()
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


@app.command("abtest")
def abtest_command(
    use_case: Annotated[str, typer.Argument(help="Registered use case.")],
    *,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Champion vs canary challenger on the declared business metric (a ranking
    use case: click-through rate on clicks simulated from held-out ratings)."""
    uc = get_any_use_case(use_case)
    ws = _workspace(workspace, tracking_uri, seed)
    if isinstance(uc, RankingUseCase):
        from aistack.monitoring.ranking import ranking_ab_test  # noqa: PLC0415

        console.print(abtest_table(ranking_ab_test(ws, uc)))
        return
    console.print(abtest_table(ab_test(ws, uc)))


def main() -> None:
    """Entry point: run the app, turning AI Stack errors into one line and exit 2."""
    # MLflow's own chatter (pickle advice, pip resolution) is not the user's concern
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    try:
        app(standalone_mode=True)
    except AIStackError as exc:
        Console(stderr=True).print(
            f"[red]error:[/] {exc}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
