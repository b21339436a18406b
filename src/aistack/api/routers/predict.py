"""Prediction routes of one use case; the request model is the use case's own.

No `from __future__ import annotations` here: FastAPI reads the endpoint
signatures, whose body types are built from the use case at run time.
"""

from typing import Any

import anyio.to_thread
import orjson
from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from pydantic import BaseModel, ConfigDict, Field, create_model

from aistack.api.auth import UNAUTHORIZED, UNAVAILABLE, require_token
from aistack.api.state import ServerState
from aistack.contract import UseCase
from aistack.errors import LogUnavailableError, SchemaError, StoreUnavailableError
from aistack.serving.requests import Scored
from aistack.training.explain import check_explainable

JSON = "application/json"
EXPLAIN = Query(
    False,
    description="Add each answer's explanation: its top feature contributions.",
)


class Contribution(BaseModel):
    """One feature's additive share of the margin."""

    feature: str
    value: float | None = Field(description="The value the model read.")
    contribution: float


class Explanation(BaseModel):
    """base_value + sum(contributions) + rest == margin."""

    base_value: float = Field(description="The model's base value (margin space).")
    margin: float = Field(
        description="Log-odds of the score (binary), the value (regression)."
    )
    contributions: list[Contribution] = Field(
        description="The top 5 feature contributions by absolute size."
    )
    rest: float = Field(description="Sum of the contributions not listed.")


class Answer(BaseModel):
    """What every answer carries, whatever the task."""

    request_id: str
    model_name: str
    model_version: int
    feature_age_seconds: dict[str, float | None] = Field(
        description="Per view: request time minus the feature values' event time."
    )
    unknown_entities: list[str] = Field(
        description="Views served with declared defaults (unknown or expired entity)."
    )
    late: list[str] = Field(
        default_factory=list,
        description=(
            "Views whose values exclude events after this one: the request is older "
            "than the entity's latest event by more than the allowed lateness, or "
            "than a batch view's last materialization."
        ),
    )
    explanation: Explanation | None = Field(
        None, description="Only with ?explain=true (binary and regression models)."
    )


class Prediction(Answer):
    """A binary classifier's answer."""

    score: float = Field(description="Probability of the positive class.")
    decision: bool = Field(description="score >= the use case's threshold.")


class AnomalyPrediction(Answer):
    """An anomaly detector's answer."""

    score: float = Field(description="Anomaly score: higher is more anomalous.")
    anomaly: bool = Field(description="score >= the use case's threshold.")


class RegressionPrediction(Answer):
    """A regressor's answer."""

    value: float = Field(description="The predicted value.")
    interval: list[float] | None = Field(
        description=(
            "[low, high] around the value: the model's own interval, or the "
            "declared residual-quantile one (Trainer(interval=)); null without one."
        ),
    )


class MulticlassPrediction(Answer):
    """A multi-class classifier's answer."""

    model_config = ConfigDict(populate_by_name=True)

    predicted_class: str = Field(alias="class", description="The most probable class.")
    probabilities: dict[str, float] = Field(description="Each class's probability.")


ANSWERS: dict[str, type[Answer]] = {
    "binary": Prediction,
    "anomaly": AnomalyPrediction,
    "regression": RegressionPrediction,
    "multiclass": MulticlassPrediction,
}


def answer_body(s: Scored) -> dict[str, Any]:
    """One answer as JSON-ready data (`explanation` only when one was made)."""
    body = {
        "request_id": s.request_id,
        **s.answer,
        "model_name": s.model_name,
        "model_version": s.model_version,
        "feature_age_seconds": s.feature_age_seconds,
        "unknown_entities": s.unknown_entities,
        "late": s.late,
    }
    if s.explanation is not None:
        body["explanation"] = s.explanation
    return body


class LabelItem(BaseModel):
    """The label of one event, known now."""

    event_id: int | str = Field(description="The event's id (the request's id).")
    label: float = Field(allow_inf_nan=False, description="The label's value.")


class LabelBatch(BaseModel):
    """Labels that arrived after their events were scored."""

    labels: list[LabelItem] = Field(min_length=1, max_length=100_000)


class LabelAnswer(BaseModel):
    """What the labels did."""

    received: int
    applied: int
    unknown_event_ids: list[int | str] = Field(
        description="Ids with no event in the online state (never scored, or pruned)."
    )


async def _score(
    request: Request,
    payloads: list[dict[str, Any]],
    route: str,
    *,
    explain: bool,
) -> list[Scored]:
    state: ServerState = request.app.state.server
    principal: str = request.state.principal
    limiter = state.limiter
    predictor = state.predictor
    if predictor is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "no champion model yet"
        )
    if explain:
        try:  # before scoring: nothing is logged for a refused request
            check_explainable(predictor.model)
        except SchemaError as exc:
            detail = f"model {predictor.name} version {predictor.version}: {exc}"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail) from exc
    try:  # off the event loop: /health answers while a big batch is scored
        with state.tracing.span("aistack.predict", {"aistack.route": route}) as span:
            scored: list[Scored] = await anyio.to_thread.run_sync(
                lambda: state.score(
                    payloads, route, explain=explain, principal=principal
                ),
                limiter=limiter,
            )
            if span is not None:
                ids = [s.request_id for s in scored]
                span.set_attribute("aistack.request_id", ids[0] if ids else "")
                span.set_attribute("aistack.request_ids", ids)
        return scored
    except LogUnavailableError as exc:  # not logged: not acknowledged
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "prediction log unavailable"
        ) from exc
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
    task = use_case.task
    answer_model = ANSWERS[task]
    batch_answer = create_model(
        f"{answer_model.__name__}Batch",
        __doc__="Answers in request order.",
        model_name=(str, ...),
        model_version=(int, ...),
        predictions=(list[answer_model], ...),  # type: ignore[valid-type]
    )
    batch_model = create_model(
        f"{request_model.__name__}Batch",
        rows=(list[request_model], Field(min_length=1, max_length=max_batch_rows)),  # type: ignore[valid-type]
    )
    router = APIRouter(
        prefix=f"/v1/{use_case.name}",
        tags=[use_case.name],
        dependencies=[Depends(require_token)],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )

    @router.post(
        "/predict", response_model=answer_model, response_model_exclude_unset=True
    )
    async def predict(
        payload: request_model,  # type: ignore[valid-type]
        request: Request,
        explain: bool = EXPLAIN,
    ) -> Response:
        """Score one request (explained with ?explain=true)."""
        rows = [payload.model_dump()]  # type: ignore[attr-defined]
        scored = await _score(request, rows, "predict", explain=explain)
        # serialised directly (the schema is answer_model's; the suite's schema
        # fuzz checks every answer against it): validating the answer again
        # cost about a tenth of a request
        return Response(orjson.dumps(answer_body(scored[0])), media_type=JSON)

    @router.post("/predict/batch", response_model=batch_answer)
    async def predict_batch(
        payload: batch_model,  # type: ignore[valid-type]
        request: Request,
        explain: bool = EXPLAIN,
    ) -> Response:
        """Score up to `max_batch_rows` requests at once (?explain=true: explained)."""
        rows = [r.model_dump() for r in payload.rows]  # type: ignore[attr-defined]
        scored = await _score(request, rows, "predict_batch", explain=explain)
        first = scored[0]
        body = {  # serialised directly: 1,000 pydantic answers cost ~16 ms
            "model_name": first.model_name,
            "model_version": first.model_version,
            "predictions": [answer_body(s) for s in scored],
        }
        return Response(orjson.dumps(body), media_type=JSON)

    @router.post("/labels", response_model=LabelAnswer)
    async def labels(payload: LabelBatch, request: Request) -> LabelAnswer:
        """Labels of scored events; label-dependent features count them from the
        time their declaration says the label was known."""
        state: ServerState = request.app.state.server
        items = [(item.event_id, item.label) for item in payload.labels]
        try:
            result = await anyio.to_thread.run_sync(
                state.label, items, limiter=state.limiter
            )
        except StoreUnavailableError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "online store unreachable"
            ) from exc
        return LabelAnswer(
            received=result.received,
            applied=result.applied,
            unknown_event_ids=[i for i in result.unknown if isinstance(i, int | str)],
        )

    return router
