"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from aistack.api.auth import UNAUTHORIZED, require_token
from aistack.api.state import ServerState

router = APIRouter(
    tags=["metrics"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED
)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    """Request, latency, score, feature and model metrics."""
    state: ServerState = request.app.state.server
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
