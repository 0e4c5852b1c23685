"""OpenTelemetry tracing: one trace per request across every process, W3C trace context carried in
NATS headers. Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set; when off, nothing is created per request.

Span attributes follow the GenAI semantic conventions (`gen_ai.*`) where they exist.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.messages import Usage

log = logging.getLogger("llm_edge.tracing")

# How long a stopping process waits for the collector to take its last spans. Unbounded, a collector
# that is down held every shutdown for 30 s (the SDK's default), longer than a rolling update allows.
FLUSH_SECONDS = 3.0

_propagator: TextMapPropagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None


def setup(service: str, endpoint: str | None) -> None:
    """Export this process's spans over OTLP/HTTP to `endpoint` (the collector's base URL)."""
    global _tracer  # one tracer per process, set once at start
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"llm-edge-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("llm_edge")


def shutdown(timeout: float = FLUSH_SECONDS) -> None:
    """Send the spans still queued, for at most `timeout` seconds; what the collector has not taken by
    then is dropped (the exporter's threads are daemons and end with the process)."""
    provider = trace.get_tracer_provider()
    if not hasattr(provider, "shutdown"):
        return
    flushing = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout)
    if flushing.is_alive():
        log.warning("the trace collector did not take the last spans within %.0f s: dropped", timeout)


def enabled() -> bool:
    return _tracer is not None


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(
    name: str, carrier: Mapping[str, str] | None, kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span whose parent comes from `carrier` (HTTP or NATS headers); None when tracing is off (then one
    shared no-op context: every request of every service enters one)."""
    if _tracer is None:
        return _OFF
    return _span(_tracer, name, carrier, kind, attributes)


@contextmanager
def _span(
    tracer: trace.Tracer, name: str, carrier: Mapping[str, str] | None, kind: SpanKind,
    attributes: Mapping[str, str | int | float] | None,
) -> Iterator[Span | None]:
    parent = _propagator.extract(carrier or {})
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
            yield current
    finally:
        otel_context.detach(token)


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current span's context into outgoing bus headers."""
    if _tracer is not None:
        _propagator.inject(headers)


def failed(current: Span | None, status: int, message: str) -> None:
    if current is not None:
        current.set_attribute("http.response.status_code", status)
        current.set_attribute("error.type", str(status))
        current.set_status(Status(StatusCode.ERROR, message))


def record_usage(current: Span | None, provider: str, model: str, usage: Usage | None) -> None:
    if current is None:
        return
    current.set_attribute("gen_ai.provider.name", provider)
    current.set_attribute("gen_ai.response.model", model)
    if usage is not None:
        current.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        current.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
