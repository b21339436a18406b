"""`POST /v1/<use case>/predict` without FastAPI's layers, for the plain case.

A single-row request spends about as much CPU in FastAPI's middleware stack,
routing, dependency solving and body handling as in its features. This pure
ASGI wrapper answers the plain case itself: JSON body, no query string, a
principal allowed to predict, a payload the request model accepts. Everything
else (a bad payload, a refused token, `?explain=true`, another content type, a
large body) goes to the FastAPI app with the body replayed, so every error is
answered exactly as the documented route answers it. Scoring is the route's
own (its thread limiter and error mapping); requests that arrive while the
scoring thread is busy are scored together (`_Coalescer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import anyio.to_thread
import orjson
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistack.api.auth import allowed_principal
from aistack.api.routers.predict import answer_body
from aistack.api.state import ServerState
from aistack.errors import LogUnavailableError, StoreUnavailableError
from aistack.serving.requests import Scored

log = logging.getLogger(__name__)

_MAX_BODY = 64 << 10  # larger single-row bodies take the FastAPI route
_JSON = (b"content-type", b"application/json")


class FastPredict:
    """Answer plain single-row predictions; hand anything else to `app`."""

    def __init__(self, app: ASGIApp, state: ServerState, route: APIRoute) -> None:
        self.app = app
        self.state = state
        self.route = route
        self.path = route.path
        assert state.use_case.serving is not None
        self.model = state.use_case.serving.request
        self.batches = _Coalescer(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] != "POST"
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        body, complete, chunks = b"", True, list[Message]()
        if headers.get(b"content-type", b"").split(b";")[0].strip() == _JSON[1]:
            body, complete, chunks = await _read(receive)
        payload = None
        principal = allowed_principal(
            self.state, headers.get(b"authorization", b"").decode("latin-1")
        )
        if complete and body and principal is not None:
            try:
                payload = self.model.model_validate(orjson.loads(body)).model_dump()
            except Exception:
                payload = None
        if payload is None or principal is None:
            await self.app(scope, _replay(chunks, receive), send)
            return
        scope["route"] = self.route  # the route template, for the metrics
        status, answer = await self._answer(payload, principal)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _answer(
        self, payload: dict[str, Any], principal: str
    ) -> tuple[int, bytes]:
        state = self.state
        if state.predictor is None:
            return 503, orjson.dumps({"detail": "no champion model yet"})
        try:
            with state.tracing.span(
                "aistack.predict", {"aistack.route": "predict"}
            ) as span:
                scored = await self.batches.score(payload, principal)
                if span is not None:
                    span.set_attribute("aistack.request_id", scored.request_id)
                    span.set_attribute("aistack.request_ids", [scored.request_id])
        except LogUnavailableError:
            return 503, orjson.dumps({"detail": "prediction log unavailable"})
        except StoreUnavailableError:
            return 503, orjson.dumps({"detail": "online store unreachable"})
        except Exception:
            log.exception("unexpected error on %s", self.path)
            return 500, orjson.dumps({"detail": "internal error"})
        return 200, orjson.dumps(answer_body(scored))


class _Coalescer:
    """Single-row requests that arrive while the scoring thread is busy are
    scored together, as one batch, when it is free (per principal, in arrival
    order): one state transaction and one model call for all of them, where
    each alone paid its own. An idle server scores each request at once, alone.

    A batch's features are the batch path's: each request sees the events
    before it in (timestamp, id) order, as when they come one by one. A batch
    that fails on something other than the store or the log is retried one
    request at a time (nothing was committed, or a retry is idempotent per
    event id), so one request's failure is its own.
    """

    max_rows = 256

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.pending: list[tuple[dict[str, Any], str, asyncio.Future[Scored]]] = []
        self.draining = False

    async def score(self, payload: dict[str, Any], principal: str) -> Scored:
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self.pending.append((payload, principal, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                taken = self.pending[: self.max_rows]
                del self.pending[: self.max_rows]
                groups: dict[str, list[tuple[dict[str, Any], asyncio.Future[Scored]]]]
                groups = {}
                for payload, principal, future in taken:
                    groups.setdefault(principal, []).append((payload, future))
                for principal, items in groups.items():
                    await self._batch(principal, items)
        finally:
            self.draining = False

    async def _batch(
        self,
        principal: str,
        items: list[tuple[dict[str, Any], asyncio.Future[Scored]]],
    ) -> None:
        payloads = [p for p, _ in items]
        try:
            scored = await self._run(payloads, principal)
        except (LogUnavailableError, StoreUnavailableError) as exc:
            for _, future in items:
                _settle(future, exc)
            return
        except Exception as exc:
            if len(items) == 1:
                _settle(items[0][1], exc)
                return
            for item in items:  # each on its own: a failure stays with its request
                await self._batch(principal, [item])
            return
        for (_, future), one in zip(items, scored, strict=True):
            if not future.done():
                future.set_result(one)

    async def _run(
        self, payloads: list[dict[str, Any]], principal: str
    ) -> list[Scored]:
        state = self.state
        result: list[Scored] = await anyio.to_thread.run_sync(
            lambda: state.score(payloads, "predict", principal=principal),
            limiter=state.limiter,
        )
        return result


def _settle(future: asyncio.Future[Scored], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


async def _read(receive: Receive) -> tuple[bytes, bool, list[Message]]:
    """The body (up to _MAX_BODY), whether that was all of it, and the messages."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", False, messages
        size += len(message.get("body", b""))
        if size > _MAX_BODY:
            return b"", False, messages
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), True, messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that first gives back the messages already read."""
    pending = list(messages)

    async def again() -> MutableMapping[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
