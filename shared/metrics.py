"""Prometheus metrics, `llm_edge_` prefix, base units, bounded labels (provider and model names come
from configuration or from resolved routes, never raw client input).

Each process exports its own: the ingress on its HTTP port at `/metrics`, every other service on its
metrics port (`METRICS_PORT`; `llm-edge up` hands each child a free one and prints them). That port also
answers the probes of a service with no HTTP API of its own: `/health/live` (the process runs) and
`/health/ready` (it takes work: connected to NATS, not draining; see runtime.notify_ready).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from shared import runtime

log = logging.getLogger("llm_edge.metrics")
_go_float: Callable[[float], str] = floatToGoString  # as prometheus_client writes a bucket's `le` (untyped there)

# --- the per-request metrics -------------------------------------------------------------------------------
#
# A request's own metrics (about twenty updates a miss across the processes) are plain numbers that the event
# loop adds to, handed to prometheus_client as a collector when scraped. prometheus_client's own `inc` goes
# through an observability check, a sign check and a lock, and `observe` scans the buckets in Python: with
# its metrics and its log line, a miss spent about a tenth of its CPU on telemetry (one core, 64 concurrent
# misses: 1,013 against 898 µs a miss with both off, five alternating pairs; docs/PERFORMANCE.md). Only the
# event loop writes these (no thread does), so an update needs no lock; a scrape from the metrics thread
# reads them in steps that run in C under the GIL (`list()` of the children, `accumulate` of the buckets).
# Exposition is still prometheus_client's, with the same names, types and samples as its own Counter, Gauge
# and Histogram.
# The metrics a thread may write (PII detections) or that change rarely stay prometheus_client's.


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount

    def expose(self, family: Metric, labels: dict[str, str]) -> None:
        cast(CounterMetricFamily, family).add_metric(list(labels.values()), self.value, created=self.created)


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def expose(self, family: Metric, labels: dict[str, str]) -> None:
        cast(GaugeMetricFamily, family).add_metric(list(labels.values()), self.value)


class HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, the last +Inf
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # the first bucket whose bound >= amount
        self.sum += amount

    def expose(self, family: Metric, labels: dict[str, str]) -> None:
        total = self.sum
        cumulative = list(itertools.accumulate(self.counts))  # in C under the GIL: the loop adds after, not during
        buckets = [(_go_float(bound), count) for bound, count in zip(self.bounds, cumulative, strict=True)]
        cast(HistogramMetricFamily, family).add_metric(list(labels.values()), buckets, total)
        family.samples.append(Sample(f"{family.name}_created", labels, self.created))


class Exposed(Protocol):
    def expose(self, family: Metric, labels: dict[str, str]) -> None: ...


Child = TypeVar("Child", bound=Exposed)


class Family(Generic[Child]):
    """A labelled metric of children that are plain numbers (see above), registered as a collector: `metric`
    is prometheus_client's family of its type, `child` makes a child."""

    def __init__(self, metric: Callable[..., Metric], child: Callable[[], Child], name: str, documentation: str,
                 labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.metric, self.child = metric, child
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        registry.register(self)

    @property
    def kind(self) -> str:
        """The Prometheus type: counter, gauge or histogram."""
        return self.describe()[0].type

    def labels(self, *values: str) -> Child:
        key = tuple(str(value) for value in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.child()
        return child

    def describe(self) -> list[Metric]:
        return [self.metric(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[Metric]:
        [family] = self.describe()
        for key, child in list(self._children.items()):
            child.expose(family, dict(zip(self.labelnames, key, strict=True)))
        return [family]


class FastCounter(Family[CounterChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(CounterMetricFamily, CounterChild, name, documentation, labelnames, registry)


class FastGauge(Family[GaugeChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(GaugeMetricFamily, GaugeChild, name, documentation, labelnames, registry)


class FastHistogram(Family[HistogramChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry = REGISTRY) -> None:
        bounds = (*sorted(float(bound) for bound in buckets), math.inf)
        super().__init__(HistogramMetricFamily, functools.partial(HistogramChild, bounds), name, documentation,
                         labelnames, registry)


_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

REQUESTS = FastCounter(
    "llm_edge_requests", "Chat requests answered by the ingress",
    ["provider", "model", "status", "origin", "cache"],
)
REQUEST_DURATION = FastHistogram(
    "llm_edge_request_duration_seconds", "Time from request to response at the ingress", ["model"],
    buckets=_LATENCY,
)
GATEWAY_OVERHEAD = FastHistogram(
    "llm_edge_gateway_overhead_seconds", "Request time spent in the gateway (total minus provider time)",
    ["cache"], buckets=_OVERHEAD,
)
TIME_TO_FIRST_CHUNK = FastHistogram(
    "llm_edge_stream_first_chunk_seconds", "Time from request to the first streamed chunk", ["model"],
    buckets=_LATENCY,
)
ACTIVE = FastGauge("llm_edge_active_requests", "Requests in flight in this process", ["service"])
CACHE = FastCounter("llm_edge_cache_lookups", "Cache lookups by tier and result", ["tier", "result"])
CACHE_HITS = FastCounter("llm_edge_cache_hits", "Cache hits by tier", ["tier"])
CACHE_MISSES = FastCounter("llm_edge_cache_misses", "Cache misses by tier", ["tier"])
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
PROVIDER_REQUESTS = FastCounter(
    "llm_edge_provider_requests", "Upstream calls by provider, model and outcome",
    ["provider", "model", "status"],
)
PROVIDER_DURATION = FastHistogram(
    "llm_edge_provider_duration_seconds", "Upstream call duration", ["provider", "model"], buckets=_LATENCY,
)
TOKENS = FastCounter("llm_edge_tokens", "Tokens by provider, model and type", ["provider", "model", "type"])
COST = FastCounter("llm_edge_cost_usd", "Cost in US dollars by provider and model", ["provider", "model"])
UNPRICED = FastCounter(
    "llm_edge_unpriced_requests", "Answers from models missing from the pricing table", ["provider", "model"],
)
SPEND = FastCounter(
    "llm_edge_spend_usd", "Cost in US dollars of the answers given, by key, tenant and public model (ingress)",
    ["key", "tenant", "model"],
)
PROVIDER_UP = FastGauge("llm_edge_provider_available", "1 when the last call to the provider succeeded", ["provider"])
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
BUS_DURATION = FastHistogram(
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
