"""Liveness and readiness; both stay open when tokens are configured."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aistack.api.auth import UNAVAILABLE
from aistack.api.state import ServerState

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", response_model=None, responses=UNAVAILABLE)
async def ready(request: Request) -> dict[str, Any] | JSONResponse:
    """200 when a model is loaded and the online store answers, else 503."""
    state: ServerState = request.app.state.server
    predictor = state.predictor
    store_ok = state.store.ping() and (state.events is None or state.events.ping())
    body: dict[str, Any] = {
        "model_loaded": predictor is not None,
        "online_store": "ok" if store_ok else "unreachable",
        "model": None
        if predictor is None
        else {"name": predictor.name, "version": predictor.version},
    }
    if predictor is None or not store_ok:
        return JSONResponse({"status": "not ready", **body}, status_code=503)
    return {"status": "ready", **body}
