"""`aistack materialize`, `stream`, `replay`, `serve`: online state and inference."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from aistack.cli._app import (
    OnlineUrlOpt,
    SeedOpt,
    TrackingOpt,
    UseCaseArg,
    WorkspaceOpt,
    app,
    authorize,
    console,
)
from aistack.errors import ConfigError
from aistack.settings import load_settings

PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Stream partitions, by entity (AISTACK_STREAM_PARTITIONS)."
    ),
]


@app.command("materialize")
def materialize_command(
    use_case: UseCaseArg,
    *,
    online_url: OnlineUrlOpt = None,
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
    from aistack.contract import get_use_case
    from aistack.features.online import materialize, open_store
    from aistack.features.realtime import bootstrap
    from aistack.features.state import open_event_state
    from aistack.workspace import Workspace

    uc = get_use_case(use_case, action="aistack materialize")
    settings = load_settings(
        workspace=workspace, tracking_uri=tracking_uri, seed=seed, online_url=online_url
    )
    authorize(settings, "write", f"online.{uc.name}")
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
    use_case: UseCaseArg,
    *,
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name in the group (default: host-pid).")
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=100_000, help="Micro-batch size.")
    ] = 500,
    linger_ms: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="After a read finding less than a full batch, wait this long "
            "for more: fewer, larger batches, less CPU per event (0: don't wait).",
        ),
    ] = 0,
    commit_interval_ms: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="Publish each micro-batch's predictions once scored; commit the "
            "log and acknowledge every N ms, many micro-batches at once (the "
            "output stream then at least once; 0: commit, then publish, each "
            "micro-batch).",
        ),
    ] = 0,
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
    online_url: OnlineUrlOpt = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Score events from the use case's Redis stream, exactly once, into the
    prediction log and the output stream (`aistack:<use case>:predictions`).

    One consumer per partition: a second one on a held partition waits as a
    standby until the holder's lease lapses."""
    from prometheus_client import start_http_server

    from aistack.contract import get_use_case
    from aistack.serving.stream import Consumer, RedisStreamSource, stream_url

    uc = get_use_case(use_case, action="aistack stream")
    settings = load_settings(
        workspace=workspace,
        tracking_uri=tracking_uri,
        seed=seed,
        online_url=online_url,
        stream_partitions=partitions,
    )
    principal = authorize(settings, "predict", uc.name)
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    source = RedisStreamSource(
        stream_url(settings),
        uc.name,
        consumer=name,
        partition=partition,
        partitions=settings.stream_partitions,
    )
    worker = Consumer(
        uc,
        settings,
        source,
        name,
        principal=principal.name,
        batch_size=batch,
        linger_ms=linger_ms,
        commit_interval_ms=commit_interval_ms,
    )
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
    use_case: UseCaseArg,
    *,
    start: Annotated[
        datetime, typer.Option("--from", help="First event time (inclusive).")
    ],
    end: Annotated[datetime, typer.Option("--to", help="Last event time (exclusive).")],
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second (0: as fast as possible).")
    ] = 0.0,
    partitions: PartitionsOpt = None,
    online_url: OnlineUrlOpt = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Push ingested events of a time range into the use case's stream, in time
    order, with each label after its delay."""
    from aistack.contract import get_use_case
    from aistack.runner import new_progress
    from aistack.serving.stream import replay, stream_url
    from aistack.workspace import Workspace

    uc = get_use_case(use_case, action="aistack replay")
    settings = load_settings(
        workspace=workspace,
        tracking_uri=tracking_uri,
        seed=seed,
        online_url=online_url,
        stream_partitions=partitions,
    )
    authorize(settings, "write", f"online.{uc.name}")
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
    use_case: UseCaseArg,
    *,
    host: Annotated[
        str | None, typer.Option(help="Bind address (AISTACK_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (AISTACK_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    nodelay: Annotated[
        bool, typer.Option(help="Set TCP_NODELAY on connections (uvicorn#3149).")
    ] = True,
    online_url: OnlineUrlOpt = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Serve the champion over HTTP (FastAPI + uvicorn) on 127.0.0.1 by default."""
    from aistack.api.server import serve
    from aistack.contract import UseCase, get_any_use_case

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
    authorize(settings, "predict", uc.name)
    serve(uc.name, settings, workers=workers, nodelay=nodelay)
