"""Assemble the API for one use case: routers, metrics middleware, lifespan."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from aistack.api.fastpath import FastPredict
from aistack.api.routers import health, metrics
from aistack.api.routers.predict import build_router
from aistack.api.state import ServerState, log
from aistack.contract import RankingUseCase, UseCase, get_any_use_case
from aistack.settings import Settings, load_settings

USE_CASE_ENV = "AISTACK_SERVE_USE_CASE"


class MetricsMiddleware:
    """Count requests and time them by route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m = self.state.metrics
            seconds = time.perf_counter() - start
            m.requests.labels(path, str(status)).inc()
            m.latency.labels(path, str(status)).observe(seconds)
            self.state.http_window.record(
                1, seconds, (), errors=int(status >= HTTPStatus.INTERNAL_SERVER_ERROR)
            )


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Each failure with its location, message and type code; inputs not echoed.

    Inputs are left out: they may be personal data, and non-finite numbers
    cannot be written as JSON.
    """
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]


def create_app(use_case: UseCase, settings: Settings) -> FastAPI:
    """The API serving `use_case` with `settings`."""
    state = ServerState(use_case, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # scoring threads: one where the state is a local SQLite file (the work
        # is CPU under the GIL: more threads only contend; measured 1,050 ->
        # 835 us of thread CPU per single-row request), more where it waits
        # on a network store
        state.limiter = anyio.CapacityLimiter(state.scoring_threads)
        state.start()
        try:
            yield
        finally:
            state.stop()  # flushes the prediction log (SIGTERM included)

    app = FastAPI(
        title=f"AI Stack: {use_case.name}",
        description=use_case.description,
        version="1",
        lifespan=lifespan,
    )
    app.state.server = state
    app.include_router(health.router)
    app.include_router(metrics.router)
    router = build_router(use_case, max_batch_rows=settings.max_batch_rows)
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    predict = next(
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path == f"/v1/{use_case.name}/predict"
    )
    app.add_middleware(FastPredict, state=state, route=predict)
    app.add_middleware(MetricsMiddleware, state=state)  # outermost: sees both
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (workers): use case and settings from env."""
    name = os.environ.get(USE_CASE_ENV)
    if not name:
        msg = f"{USE_CASE_ENV} is not set: start the server with `aistack serve`"
        raise RuntimeError(msg)
    use_case = get_any_use_case(name)
    if isinstance(use_case, RankingUseCase):
        from aistack.api.ranking import create_ranking_app  # noqa: PLC0415

        return create_ranking_app(use_case, load_settings())
    return create_app(use_case, load_settings())
