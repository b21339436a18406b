"""`POST /v1/<use case>/predict` without FastAPI's layers, for the plain case.

A single-row request spends about as much CPU in FastAPI's middleware stack,
routing, dependency solving and body handling as in its features. This pure
ASGI wrapper answers the plain case itself: JSON body, no query string, a
principal allowed to predict, a payload the request model accepts. Everything
else (a bad payload, a refused token, `?explain=true`, another content type, a
large body) goes to the FastAPI app with the body replayed, so every error is
answered exactly as the documented route answers it. Scoring is the route's
own (`_score`'s thread limiter and error mapping).
"""

from __future__ import annotations

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
                scored = await anyio.to_thread.run_sync(
                    lambda: state.score([payload], "predict", principal=principal),
                    limiter=state.limiter,
                )
                if span is not None:
                    span.set_attribute("aistack.request_id", scored[0].request_id)
                    span.set_attribute("aistack.request_ids", [scored[0].request_id])
        except LogUnavailableError:
            return 503, orjson.dumps({"detail": "prediction log unavailable"})
        except StoreUnavailableError:
            return 503, orjson.dumps({"detail": "online store unreachable"})
        except Exception:
            log.exception("unexpected error on %s", self.path)
            return 500, orjson.dumps({"detail": "internal error"})
        return 200, orjson.dumps(answer_body(scored[0]))


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
