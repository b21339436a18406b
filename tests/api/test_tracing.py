"""OpenTelemetry: spans request -> features -> model -> log over OTLP/HTTP to a
real receiver when configured; a no-op costing nothing measurable when off."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from aistack.api.tracing import Tracing
from servers import aistack_server

ROW = {
    "customer_id": 1,
    "terminal_id": 2,
    "tx_amount": 42.5,
    "tx_datetime": "2018-05-30T12:00:00",
}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.spans: list = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.server.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_spans_reach_an_otlp_receiver_with_the_request_id(served_workspace) -> None:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    env = {"AISTACK_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        with aistack_server(served_workspace.settings.workspace, env=env) as (base, _):
            answer = httpx.post(f"{base}/v1/fraud/predict", json=ROW, timeout=30)
            request_id = answer.json()["request_id"]
            deadline = time.monotonic() + 30
            while len(receiver.spans) < 4:
                assert time.monotonic() < deadline, "no spans received"
                time.sleep(0.1)
    finally:
        receiver.shutdown()
    spans = {s.name: s for s in receiver.spans}
    root = spans["aistack.predict"]
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["aistack.request_id"] == request_id
    assert attributes["aistack.route"] == "predict"
    for child in ("aistack.features", "aistack.model", "aistack.log"):
        assert spans[child].trace_id == root.trace_id
        assert spans[child].parent_span_id == root.span_id


def test_tracing_off_costs_nothing_measurable() -> None:
    tracing = Tracing(None, service="test")
    attributes = {"aistack.route": "predict"}

    def request() -> None:  # the four spans of one request, nested as served
        with tracing.span("aistack.predict", attributes) as span:
            assert span is None
            with tracing.span("aistack.features"):
                pass
            with tracing.span("aistack.model"):
                pass
            with tracing.span("aistack.log"):
                pass

    n = 20_000
    best = min(timeit(request, n) for _ in range(5))  # least disturbed by load
    assert best / n < 20e-6  # per request; scoring one takes ~1 ms


def timeit(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start
