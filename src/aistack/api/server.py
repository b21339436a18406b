"""Run the API under uvicorn: settings travel to worker processes as environment."""

from __future__ import annotations

import os
import tempfile

import uvicorn

from aistack.api.main import USE_CASE_ENV
from aistack.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as AISTACK_* variables, so every worker builds the same ones."""
    env = {
        "AISTACK_WORKSPACE": str(settings.workspace.resolve()),
        "AISTACK_TRACKING_URI": settings.mlflow_uri,
        "AISTACK_SEED": str(settings.seed),
        "AISTACK_HOST": settings.host,
        "AISTACK_PORT": str(settings.port),
        "AISTACK_POLL_SECONDS": str(settings.poll_seconds),
        "AISTACK_MAX_BATCH_ROWS": str(settings.max_batch_rows),
        "AISTACK_LOG_FLUSH_SECONDS": str(settings.log_flush_seconds),
        "AISTACK_EVAL_SECONDS": str(settings.eval_seconds),
        "AISTACK_DRIFT_HISTOGRAMS": str(settings.drift_histograms).lower(),
    }
    if settings.alert_webhook_url:
        env["AISTACK_ALERT_WEBHOOK_URL"] = settings.alert_webhook_url
    if settings.online_url:
        env["AISTACK_ONLINE_URL"] = settings.online_url
    if settings.api_tokens:
        tokens = ",".join(f'"{t.get_secret_value()}"' for t in settings.api_tokens)
        env["AISTACK_API_TOKENS"] = f"[{tokens}]"
    return env


def serve(use_case: str, settings: Settings, *, workers: int, nodelay: bool) -> None:
    """Serve until SIGINT/SIGTERM; shutdown flushes the prediction log."""
    os.environ.update(settings_env(settings))
    os.environ[USE_CASE_ENV] = use_case
    if workers > 1:  # metrics from every worker, merged on /metrics
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="aistack-prom-")
        )
    http = "aistack.api.nodelay:NoDelayHttpToolsProtocol" if nodelay else "httptools"
    uvicorn.run(
        "aistack.api.main:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        http=http,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
