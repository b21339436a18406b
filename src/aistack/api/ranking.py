"""The API of a ranking use case: top-K items per user, and for a session.

At load, the champion's top-`MAX_K` items of every known user are computed
once (items the user already has excluded), so a request is a dictionary
lookup and a slice; the result is exactly the model's ranking. Unknown users
go down the cold-start path (the recommender's scores for an empty history:
popularity and content) and are flagged. A background thread polls the
registry and swaps in a new champion atomically; under a canary rollout a
sticky share of users (the same routing as every use case) is answered by the
challenger, and the answer names its arm. Every `eval_seconds` the canary is
judged by the use case's rollout guards (`aistack.api.guards`, as every
server): error rate, p99 latency, and the shift of the shown items'
popularity against the champion's answers; a broken guard rolls it back,
`promote_after` healthy requests promote it. Item popularity is the one the
monitor reads (`item_popularity`: the use case's gold popularity table), the
same for both arms, re-read when that table gets a new version.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi import status as http
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from aistack.api.auth import UNAUTHORIZED, UNAVAILABLE, require_token
from aistack.api.guards import RolloutJudge, Window, end_as_judged
from aistack.contract import RankingUseCase
from aistack.governance.audit import AUDIT_HANDOFF_ENV, AuditBuffer, audit_log, entry
from aistack.governance.principals import Policy
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.registry.artifacts import load_model
from aistack.registry.rollout import Rollout, read_rollout, routes_to_challenger
from aistack.serving.log import PredictionLog
from aistack.settings import Settings
from aistack.training.recommend import RankingModel, item_popularity
from aistack.training.tracking import tracking

log = logging.getLogger("aistack.api.ranking")
MAX_K = 100
ID_MAX = 2**63 - 1
RECOMMENDATION_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
        ("route", pa.string()),
        ("user_id", pa.int64()),
        ("items", pa.string()),
        ("cold_start", pa.bool_()),
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
        ("arm", pa.string()),
    ]
)
"""One row per served answer; `items` is the JSON list of item ids, best first."""


class RankedItem(BaseModel):
    """One recommended item."""

    item_id: int | str
    score: float
    rank: int


class UserRecommendations(BaseModel):
    """A user's top-K, best first; items the user already has are left out."""

    user_id: int
    items: list[RankedItem]
    cold_start: bool = Field(
        description="The user has no history: popularity and content path."
    )
    model_name: str
    model_version: int
    arm: str = Field(
        default="champion", description="champion, or challenger under a canary."
    )
    request_id: str = Field(description="This answer's id (log, audit, trace).")


class Session(BaseModel):
    """An anonymous visitor's recent items."""

    items: list[int] = Field(min_length=0, max_length=1000)
    k: int = Field(default=10, ge=1, le=MAX_K)


class SessionRecommendations(BaseModel):
    """Top-K for a session; the session's own items are left out."""

    items: list[RankedItem]
    unknown_items: list[int] = Field(description="Session items not in the catalogue.")
    model_name: str
    model_version: int
    request_id: str = Field(description="This answer's id (log, audit, trace).")


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aistack_requests",
            "Requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aistack_request_seconds",
            "Time to answer, by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
        )
        self.cold_start = Counter(
            "aistack_cold_start_requests",
            "Requests for users without history.",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "aistack_auth_failures", "Refused bearer tokens.", registry=self.registry
        )


@dataclass
class Loaded:
    """One served model version and its precomputed rankings."""

    version: int
    model: RankingModel
    top: np.ndarray
    scores: np.ndarray
    cold_top: np.ndarray
    cold_scores: np.ndarray
    answers: list[list[dict[str, Any]]]
    cold_answer: list[dict[str, Any]]
    popularity: np.ndarray  # gold's count per item index: what the guards compare
    popularity_lineage: dict[str, int]  # the popularity table's version read

    def shown_popularity(self, row: int | None, n: int) -> list[float]:
        """Popularity of the first `n` items answered to `row` (None: cold)."""
        top = self.cold_top if row is None else self.top[row]
        return self.popularity[top[:n]].tolist()  # type: ignore[no-any-return]


def popularity_per_item(model: RankingModel, popularity: pd.Series) -> np.ndarray:
    """`popularity` (count per item id) along the model's item index, 0 if absent."""
    aligned = popularity.reindex(pd.Index(model.items)).fillna(0.0)
    return aligned.to_numpy(np.float64)


def precompute(
    model: RankingModel,
    version: int,
    popularity: tuple[pd.Series, dict[str, int]],
) -> Loaded:
    """Every known user's top-`MAX_K` and the cold-start ranking; `popularity`
    is `item_popularity`'s answer (counts per item id, the version read)."""
    k = min(MAX_K, len(model.items))
    tops, scores = [], []
    for start in range(0, len(model.users), 1024):
        rows = np.arange(start, min(start + 1024, len(model.users)))
        top, score = model.top_k_rows(rows, k)
        tops.append(top)
        scores.append(score)
    cold_top, cold_scores, _ = model.top_k_session([], k)
    top, score = np.concatenate(tops), np.concatenate(scores)
    return Loaded(
        version,
        model,
        top,
        score,
        cold_top,
        cold_scores,
        [_items(model, top[row], score[row]) for row in range(len(top))],
        _items(model, cold_top, cold_scores),
        popularity_per_item(model, popularity[0]),
        popularity[1],
    )


class RankingState:
    """The served model, swapped by a registry poller; metrics; settings."""

    def __init__(self, use_case: RankingUseCase, settings: Settings) -> None:
        self.use_case = use_case
        self.settings = settings
        self.metrics = _Metrics()
        self.policy = Policy.load(settings.policy)
        lake = Lake(settings.tables_dir)
        self.lake = lake
        self.registry = Registry(lake, settings.mlflow_uri)
        self.log = PredictionLog(
            lake,
            use_case.log_table,
            flush_seconds=settings.log_flush_seconds,
            wal_dir=settings.workspace / "wal" / use_case.log_table,
            schema=RECOMMENDATION_LOG_SCHEMA,
        )
        audit = audit_log(settings, os.environ)
        self.audit = (
            AuditBuffer(
                audit.path,
                flush_seconds=settings.audit_flush_seconds,
                key=audit.key,
                anchor=audit.anchor,
                handoff=os.environ.get(AUDIT_HANDOFF_ENV) == "1",
            )
            if settings.audit_predictions
            else None
        )
        self.loaded: Loaded | None = None
        self.canary: tuple[Rollout, Loaded] | None = None
        self._popularity: tuple[pd.Series, dict[str, int]] | None = None
        self.windows = {"champion": Window(), "challenger": Window()}
        self.judge: RolloutJudge | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def popularity(self) -> tuple[pd.Series, dict[str, int]]:
        """`item_popularity` of the use case, read again only when its table's
        version moves (the same counts the monitor reads)."""
        cached = self._popularity
        table = (self.use_case.popularity_table or (self.use_case.interactions,))[0]
        if cached is None or self.lake.versions([table]) != cached[1]:
            cached = item_popularity(self.lake, self.use_case)
            self._popularity = cached
        return cached

    def _load(self, version: int, current: Loaded | None) -> Loaded:
        popularity = self.popularity()
        if current is not None and current.version == version:
            if current.popularity_lineage == popularity[1]:
                return current
            return replace(
                current,
                popularity=popularity_per_item(current.model, popularity[0]),
                popularity_lineage=popularity[1],
            )
        model = load_model(self.registry, self.use_case.name, version)
        log.info("loaded %s version %s", self.use_case.name, version)
        return precompute(model, version, popularity)

    def refresh(self) -> None:
        """Load the champion and a canary challenger when they change."""
        name = self.use_case.name
        with tracking(self.settings.mlflow_uri):
            version = self.registry.version_of(name, "champion")
            if version is not None:
                self.loaded = self._load(version, self.loaded)
            rollout = read_rollout(self.registry, name)
            if rollout is None or not rollout.active or rollout.mode != "canary":
                self.canary = None
                return
            current = self.canary[1] if self.canary else None
            if current is None or current.version != rollout.version:
                self.judge = RolloutJudge(self.use_case.guards)
                self.windows["challenger"].take()
            self.canary = (rollout, self._load(rollout.version, current))

    def evaluate(self) -> None:
        """Judge a canary on the windows since the last call; end it if decided."""
        champion = self.windows["champion"].take()
        challenger = self.windows["challenger"].take()
        canary, judge = self.canary, self.judge
        if canary is None or judge is None:
            return
        rollout = canary[0]
        verdict = judge.judge(
            champion, challenger, mode=rollout.mode, version=rollout.version
        )
        if verdict is None:
            return
        self.canary, self.judge = None, None  # traffic back to the champion now
        with tracking(self.settings.mlflow_uri):
            end_as_judged(self.registry, self.use_case.name, verdict, rollout)

    def record(
        self,
        route: str,
        items: list[dict[str, Any]],
        *,
        user_id: int | None,
        cold_start: bool,
        version: int,
        arm: str,
        principal: str,
    ) -> str:
        """Log and audit one served answer (its item ids, best first); its id.

        The audit record (who, model version, answer id; not the user or the
        items) is written ahead before the answer leaves: 503 when it cannot be.
        """
        request_id = uuid.uuid4().hex
        if self.audit is not None:
            details = {
                "use_case": self.use_case.name,
                "model_version": version,
                "request_id": request_id,
                "route": route,
                "arm": arm,
            }
            try:
                self.audit.record([entry(principal, "predict", details)])
            except OSError as exc:
                raise HTTPException(
                    http.HTTP_503_SERVICE_UNAVAILABLE, f"audit log: {exc}"
                ) from exc
        self.log.append_records(
            [
                {
                    "request_id": request_id,
                    "logged_at": datetime.now(UTC),
                    "route": route,
                    "user_id": user_id,
                    "items": orjson.dumps([i["item_id"] for i in items]).decode(),
                    "cold_start": cold_start,
                    "model_name": self.use_case.name,
                    "model_version": version,
                    "arm": arm,
                }
            ]
        )
        return request_id

    def start(self) -> None:
        """Start the log and audit, load now, then poll the registry."""
        self.log.start()
        if self.audit is not None:
            self.audit.start()
        try:
            self.refresh()
        except Exception:
            log.exception("could not load the champion")
        for seconds, step in (
            (self.settings.poll_seconds, self.refresh),
            (self.settings.eval_seconds, self.evaluate),
        ):
            thread = threading.Thread(target=self._loop, args=(seconds, step))
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _loop(self, seconds: float, step: Callable[[], None]) -> None:
        while not self._stop.wait(seconds):
            try:
                step()
            except Exception:
                log.exception("background step failed; will retry")

    def stop(self) -> None:
        """Stop polling and judging; flush the log and the audit records."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.log.close()
        if self.audit is not None:
            self.audit.close()


def _items(
    model: RankingModel, top: np.ndarray, scores: np.ndarray
) -> list[dict[str, Any]]:
    ids = model.items[top]
    return [
        {"item_id": i.item() if hasattr(i, "item") else i, "score": float(s), "rank": r}
        for r, (i, s) in enumerate(zip(ids, scores, strict=True), start=1)
        if np.isfinite(s)
    ]


class _Counted:
    """Count and time requests by route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)


def build_ranking_router(use_case: RankingUseCase) -> APIRouter:
    """GET /v1/<uc>/users/{id}/items and POST /v1/<uc>/session/items."""
    router = APIRouter(
        prefix=f"/v1/{use_case.name}",
        tags=[use_case.name],
        dependencies=[Depends(require_token)],
        responses={**UNAUTHORIZED, **UNAVAILABLE},
    )

    def served(request: Request) -> tuple[RankingState, Loaded]:
        state: RankingState = request.app.state.server
        if state.loaded is None:
            raise HTTPException(http.HTTP_503_SERVICE_UNAVAILABLE, "no champion yet")
        return state, state.loaded

    @router.get("/users/{user_id}/items", response_model=UserRecommendations)
    async def for_user(
        request: Request,
        user_id: Annotated[int, Path(ge=0, le=ID_MAX)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = use_case.k,
    ) -> Response:
        """The user's top-k items not yet rated; unknown users: cold start."""
        start = time.perf_counter()
        state, loaded = served(request)
        arm = "champion"
        canary = state.canary
        if canary is not None and routes_to_challenger(canary[0], user_id):
            arm, loaded = "challenger", canary[1]
        row = loaded.model.user_row(user_id)
        if row is None:
            state.metrics.cold_start.inc()
            items = loaded.cold_answer[:k]
        else:
            items = loaded.answers[row][:k]
        state.windows[arm].record(
            1, time.perf_counter() - start, loaded.shown_popularity(row, len(items))
        )
        request_id = state.record(
            "user",
            items,
            user_id=user_id,
            cold_start=row is None,
            version=loaded.version,
            arm=arm,
            principal=request.state.principal,
        )
        body = {  # precomputed answers, serialised directly (no revalidation)
            "user_id": user_id,
            "items": items,
            "cold_start": row is None,
            "model_name": use_case.name,
            "model_version": loaded.version,
            "arm": arm,
            "request_id": request_id,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @router.post("/session/items", response_model=SessionRecommendations)
    async def for_session(payload: Session, request: Request) -> SessionRecommendations:
        """Top-k items for an anonymous session of recently seen items."""
        state, loaded = served(request)
        top, scores, unknown = loaded.model.top_k_session(
            list(payload.items), payload.k
        )
        items = _items(loaded.model, top, scores)
        request_id = state.record(
            "session",
            items,
            user_id=None,
            cold_start=not payload.items,
            version=loaded.version,
            arm="champion",
            principal=request.state.principal,
        )
        return SessionRecommendations(
            items=[RankedItem(**i) for i in items],
            unknown_items=[int(i) for i in unknown],  # type: ignore[call-overload]
            model_name=use_case.name,
            model_version=loaded.version,
            request_id=request_id,
        )

    return router


def create_ranking_app(use_case: RankingUseCase, settings: Settings) -> FastAPI:
    """The API serving a ranking use case: health, readiness, metrics, top-K."""
    state = RankingState(use_case, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title=f"AI Stack: {use_case.name}",
        description=use_case.description,
        version="1",
        lifespan=lifespan,
    )
    app.state.server = state

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: a champion is loaded."""
        if state.loaded is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "model_version": state.loaded.version})

    @app.get("/metrics", dependencies=[Depends(require_token)], responses=UNAUTHORIZED)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics (with a policy: for principals granted predict, as
        every route but health and readiness)."""
        return PlainTextResponse(
            generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    app.include_router(build_ranking_router(use_case))

    app.add_middleware(_Counted, metrics=state.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        from aistack.api.main import field_errors  # noqa: PLC0415

        return JSONResponse({"detail": field_errors(exc)}, status_code=422)

    return app
