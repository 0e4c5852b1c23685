"""Prometheus metrics, `llm_edge_` prefix, base units, bounded labels (provider and model names come
from configuration or from resolved routes, never raw client input).

Each process exports its own: the ingress on its HTTP port at `/metrics`, every other service on its
metrics port (`METRICS_PORT`; `llm-edge up` hands each child a free one and prints them). That port also
answers the probes of a service with no HTTP API of its own: `/health/live` (the process runs) and
`/health/ready` (it takes work: connected to NATS, not draining; see runtime.notify_ready).
"""

from __future__ import annotations

import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from shared import runtime

log = logging.getLogger("llm_edge.metrics")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

REQUESTS = Counter(
    "llm_edge_requests", "Chat requests answered by the ingress",
    ["provider", "model", "status", "origin", "cache"],
)
REQUEST_DURATION = Histogram(
    "llm_edge_request_duration_seconds", "Time from request to response at the ingress", ["model"],
    buckets=_LATENCY,
)
GATEWAY_OVERHEAD = Histogram(
    "llm_edge_gateway_overhead_seconds", "Request time spent in the gateway (total minus provider time)",
    ["cache"], buckets=_OVERHEAD,
)
TIME_TO_FIRST_CHUNK = Histogram(
    "llm_edge_stream_first_chunk_seconds", "Time from request to the first streamed chunk", ["model"],
    buckets=_LATENCY,
)
ACTIVE = Gauge("llm_edge_active_requests", "Requests in flight in this process", ["service"])
CACHE = Counter("llm_edge_cache_lookups", "Cache lookups by tier and result", ["tier", "result"])
CACHE_HITS = Counter("llm_edge_cache_hits", "Cache hits by tier", ["tier"])
CACHE_MISSES = Counter("llm_edge_cache_misses", "Cache misses by tier", ["tier"])
SEMANTIC_LOOKUP = Histogram(
    "llm_edge_cache_semantic_lookup_seconds",
    "Semantic cache lookups (the embedding and the index search) by result: hit, miss or error",
    ["result"], buckets=(*_OVERHEAD, 1, 2.5),
)


class Children:
    """A labelled metric's children, each looked up once: `labels()` validates and stringifies its values
    and takes a lock on every call (3–4 µs; a provider worker made seven such calls per answer). The label
    values are the metric's own bounded set (configured names), so this holds no more than Prometheus does."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Lookup:
    """One tier's hit and miss counters, under both names (lookups{result}, and hits / misses)."""

    __slots__ = ("_hit", "_hit_total", "_miss", "_miss_total")

    def __init__(self, tier: str) -> None:
        self._hit, self._hit_total = CACHE.labels(tier, "hit"), CACHE_HITS.labels(tier)
        self._miss, self._miss_total = CACHE.labels(tier, "miss"), CACHE_MISSES.labels(tier)

    def hit(self) -> None:
        self._hit.inc()
        self._hit_total.inc()

    def miss(self) -> None:
        self._miss.inc()
        self._miss_total.inc()

    def hits(self, count: int) -> None:
        """`count` hits at once (an embeddings batch looks up one key per input)."""
        if count:
            self._hit.inc(count)
            self._hit_total.inc(count)

    def misses(self, count: int) -> None:
        if count:
            self._miss.inc(count)
            self._miss_total.inc(count)
PROVIDER_REQUESTS = Counter(
    "llm_edge_provider_requests", "Upstream calls by provider, model and outcome",
    ["provider", "model", "status"],
)
PROVIDER_DURATION = Histogram(
    "llm_edge_provider_duration_seconds", "Upstream call duration", ["provider", "model"], buckets=_LATENCY,
)
TOKENS = Counter("llm_edge_tokens", "Tokens by provider, model and type", ["provider", "model", "type"])
COST = Counter("llm_edge_cost_usd", "Cost in US dollars by provider and model", ["provider", "model"])
UNPRICED = Counter(
    "llm_edge_unpriced_requests", "Answers from models missing from the pricing table", ["provider", "model"],
)
SPEND = Counter(
    "llm_edge_spend_usd", "Cost in US dollars of the answers given, by key, tenant and public model (ingress)",
    ["key", "tenant", "model"],
)
PROVIDER_UP = Gauge("llm_edge_provider_available", "1 when the last call to the provider succeeded", ["provider"])
QUEUE_WAIT = Histogram(
    "llm_edge_queue_wait_seconds", "Time a request waited in a provider's admission queue", ["provider"],
    buckets=(*_OVERHEAD, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge("llm_edge_queue_depth", "Requests waiting in a provider's admission queue", ["provider"])
IN_FLIGHT = Gauge("llm_edge_admitted_in_flight", "Admitted calls not yet finished, all replicas", ["provider"])
BREAKER_OPEN = Gauge("llm_edge_breaker_open", "1 while the target's circuit breaker is open", ["target"])
RETRIES = Counter("llm_edge_retries", "Retries of a target after a retryable failure", ["target"])
RATE_LIMITED = Counter(
    "llm_edge_rate_limited", "Requests refused by a key's limit (requests, tokens or budget)",
    ["key", "limit"],
)
LIMITER_FALLBACKS = Counter(
    "llm_edge_limiter_fallbacks", "Admissions decided by the per-process limits because Redis did not answer",
)
PII_DETECTIONS = Counter(
    "llm_edge_pii_detections", "Personal data and secrets found in requests (distinct values a request), by kind "
    "and the mode applied to them", ["kind", "mode"],
)
BUS_DURATION = Histogram(
    "llm_edge_bus_request_duration_seconds", "Bus request-reply round trip by subject",
    ["subject"], buckets=(*_OVERHEAD, 1, 5, 30),
)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a line
        pass


_metrics_app = make_wsgi_app()


def _app(expose: bool) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health/live":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"live\n"]
        if path == "/health/ready":
            ready = runtime.is_ready()
            start_response("200 OK" if ready else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ready else b"not ready\n"]
        if not expose:  # ENABLE_METRICS=false: the probes only
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"metrics are disabled (ENABLE_METRICS=false)\n"]
        return _metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


def probe_server(host: str, port: int, expose: bool = True) -> WSGIServer:
    """The HTTP server behind `serve`: /metrics, /health/live and /health/ready (not yet serving)."""
    return make_server(host, port, _app(expose), _Server, handler_class=_QuietHandler)


def serve(port: int | None, host: str = "0.0.0.0", *, expose: bool = True) -> None:
    """Expose this process's metrics and probes on `port` (a background thread); nothing when port is None.

    During a rolling restart the old process still holds the port for a moment: keep trying.
    """
    if not port:
        return

    def bind() -> None:
        for _ in range(600):
            try:
                server = probe_server(host, port, expose)
            except OSError:
                time.sleep(0.1)
                continue
            server.serve_forever()
            return
        log.warning("metrics port %d stayed busy; this process exports no metrics", port)

    threading.Thread(target=bind, name="metrics", daemon=True).start()
