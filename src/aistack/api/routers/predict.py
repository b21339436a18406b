"""Prediction routes of one use case; the request model is the use case's own.

No `from __future__ import annotations` here: FastAPI reads the endpoint
signatures, whose body types are built from the use case at run time.
"""

from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field, create_model

from aistack.api.auth import require_token
from aistack.api.state import ServerState
from aistack.errors import StoreUnavailableError
from aistack.platform.serving import Scored
from aistack.platform.usecase import UseCase


class Prediction(BaseModel):
    """One answer."""

    request_id: str
    score: float
    decision: bool
    model_name: str
    model_version: int
    feature_age_seconds: dict[str, float | None] = Field(
        description="Per view: request time minus the feature values' event time."
    )
    unknown_entities: list[str] = Field(
        description="Views served with declared defaults (unknown or expired entity)."
    )


class BatchPrediction(BaseModel):
    """Answers in request order."""

    model_name: str
    model_version: int
    predictions: list[Prediction]


def _answer(s: Scored) -> Prediction:
    return Prediction(
        request_id=s.request_id,
        score=s.score,
        decision=s.decision,
        model_name=s.model_name,
        model_version=s.model_version,
        feature_age_seconds=s.feature_age_seconds,
        unknown_entities=s.unknown_entities,
    )


def _score(
    state: ServerState, payloads: list[dict[str, Any]], route: str
) -> list[Scored]:
    if state.predictor is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "no champion model yet"
        )
    try:
        return state.score(payloads, route)
    except StoreUnavailableError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "online store unreachable"
        ) from exc


def build_router(use_case: UseCase, *, max_batch_rows: int) -> APIRouter:
    """POST /v1/<use case>/predict and /predict/batch for `use_case`."""
    if use_case.serving is None:
        msg = f"use case {use_case.name} declares no serving request model"
        raise ValueError(msg)
    request_model = use_case.serving.request
    batch_model = create_model(
        f"{request_model.__name__}Batch",
        rows=(list[request_model], Field(min_length=1, max_length=max_batch_rows)),  # type: ignore[valid-type]
    )
    router = APIRouter(
        prefix=f"/v1/{use_case.name}",
        tags=[use_case.name],
        dependencies=[Depends(require_token)],
    )

    @router.post("/predict", response_model=Prediction)
    async def predict(payload: request_model, request: Request) -> Prediction:  # type: ignore[valid-type]
        """Score one request."""
        state: ServerState = request.app.state.server
        return _answer(_score(state, [payload.model_dump()], "predict")[0])  # type: ignore[attr-defined]

    @router.post("/predict/batch", response_model=BatchPrediction)
    async def predict_batch(payload: batch_model, request: Request) -> Response:  # type: ignore[valid-type]
        """Score up to `max_batch_rows` requests at once."""
        state: ServerState = request.app.state.server
        rows = [r.model_dump() for r in payload.rows]  # type: ignore[attr-defined]
        scored = _score(state, rows, "predict_batch")
        first = scored[0]
        body = {  # serialised directly: 1,000 pydantic answers cost ~16 ms
            "model_name": first.model_name,
            "model_version": first.model_version,
            "predictions": [
                {
                    "request_id": s.request_id,
                    "score": s.score,
                    "decision": s.decision,
                    "model_name": s.model_name,
                    "model_version": s.model_version,
                    "feature_age_seconds": s.feature_age_seconds,
                    "unknown_entities": s.unknown_entities,
                }
                for s in scored
            ],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return router
