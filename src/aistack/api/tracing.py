"""OpenTelemetry spans of a scoring request: request -> features -> model -> log.

Off by default: without `otlp_endpoint` a span is one shared no-op context
manager, so tracing costs nothing measurable when off (a test times it). On, each
request gets an `aistack.predict` span carrying the request ids, with child spans
for the feature lookup, the model and the state update + prediction log,
exported over OTLP/HTTP in batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span

_OFF: AbstractContextManager[None] = contextlib.nullcontext()


class Tracing:
    """Spans for one server; a no-op unless an OTLP endpoint is given."""

    def __init__(self, endpoint: str | None, *, service: str) -> None:
        self.endpoint = endpoint
        self.service = service
        self._provider: TracerProvider | None = None
        if endpoint is not None:  # a provider of its own: no global state
            self._provider = TracerProvider(
                resource=Resource.create({"service.name": service})
            )
            exporter = OTLPSpanExporter(endpoint=endpoint)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self._provider.get_tracer("aistack")

    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Span | None]:
        """A span named `name` (child of the current one), or the no-op when off."""
        if self._provider is None:
            return _OFF
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def shutdown(self) -> None:
        """Export the spans still buffered."""
        if self._provider is not None:
            self._provider.shutdown()
