"""The HTTP edge: OpenAI-compatible endpoints that turn a request into one bus message and the reply
into JSON. Every error leaves as OpenAI's error shape with its status, through one exception handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client
from opentelemetry.trace import Span, SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.ingress import health, limits, shapes, stream
from services.ingress.auth import Grant, keyring
from services.ingress.limits import Refused
from services.ingress.parse import parse_chat_request, read_body
from services.router.routes import Routes
from shared import bus, metrics, runtime, tracing
from shared.config import Config
from shared.errors import (
    DeadlineExceeded,
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    Unavailable,
    from_reply,
)
from shared.logs import key_name, request_id
from shared.messages import CacheMiss, ChatResult, ErrorReply, Reply, StreamEnd, StreamOptions, Usage, encode
from shared.subjects import Headers, Subjects

log = logging.getLogger("llm_edge.ingress")

JSON = "application/json"
# Extra time granted to the bus beyond the client's deadline, so the hop that ran out of time can still
# answer with its own, more precise error.
_REPLY_GRACE_SECONDS = 0.25
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TIERS = {"l1": "hit-l1", "l2": "hit-l2"}


class Gateway:
    """What the routes share: configuration, the bus connection, subjects."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subjects = Subjects(config.prefix)
        self.routes = Routes(config)
        self.nc: Client | None = None
        self.draining = False
        # None when no keys are configured: the gateway is open, as if every caller were one tenant.
        self.keyring = keyring(config)

    def bus(self) -> Client:
        if self.nc is None or not self.nc.is_connected:
            raise Unavailable("the message bus is not connected", code="bus_unavailable")
        return self.nc

    def bus_headers(
        self, request: Request, rid: str, deadline: float, namespace: str = "default"
    ) -> dict[str, str]:
        headers = {
            Headers.REQUEST_ID: rid,
            Headers.DEADLINE: str(int(deadline * 1000)),
            Headers.NAMESPACE: namespace,
        }
        control = request.headers.get("cache-control", "").lower()
        flags = [flag for flag in ("no-cache", "no-store") if flag in control]
        if flags:
            headers[Headers.CACHE_CONTROL] = ",".join(flags)
        if ttl := request.headers.get("x-llm-edge-cache-ttl"):
            headers[Headers.CACHE_TTL] = ttl
        if tracing.enabled():
            tracing.inject(headers)  # the ingress span becomes the parent of every hop after it
        elif traceparent := request.headers.get("traceparent"):
            headers[Headers.TRACEPARENT] = traceparent
        return headers

    def timeout(self, request: Request) -> float:
        value = request.headers.get("x-llm-edge-timeout")
        if value is None:
            return self.config.ingress.request_timeout_seconds
        try:
            seconds = float(value)
        except ValueError:
            raise InvalidRequest("`x-llm-edge-timeout` must be a number of seconds.") from None
        if not 0 < seconds <= 3600:
            raise InvalidRequest("`x-llm-edge-timeout` must be between 0 and 3600 seconds.")
        return seconds

    def authenticate(self, request: Request) -> Grant | None:
        """The caller's key (401 without a valid one); None when the gateway has no keys (open)."""
        if self.keyring is None:
            return None
        key_name.set(None)  # a keep-alive connection's next request must not log the last one's key
        grant = self.keyring.authenticate(request.headers)
        request.state.key = grant.name
        key_name.set(grant.name)
        return grant

    async def admit(self, request: Request, grant: Grant, model: str) -> str:
        """The model check (403) and the key's limits (429), then the cache namespace to use.

        Every model-serving endpoint calls `authenticate` first and this once it knows the model."""
        assert self.keyring is not None
        try:
            snap = await self.keyring.admit(grant, model)
        except Refused as refused:
            request.state.limit_headers = limits.headers(grant.rule, refused.snap)
            if refused.snap.denied == "budget":  # waiting seconds will not help: tell SDKs not to retry
                request.state.limit_headers["x-should-retry"] = "false"
            raise refused.error from None
        if snap is not None:
            request.state.limit_headers = limits.headers(grant.rule, snap)
        return grant.namespace

    def stream_charger(self, grant: Grant) -> Callable[[StreamEnd], None]:
        """What a stream calls with its end frame: the usage and cost it reports are charged."""
        return lambda end: self.charge(grant, end.usage, end.cost_usd)

    def charge(self, grant: Grant, usage: Usage | None, cost: float) -> None:
        """Count an answer's real tokens and cost against its key; never delays the response."""
        if grant.rule.limited and self.keyring is not None:
            self.keyring.limiter.charge(grant.rule, usage.total_tokens if usage is not None else 0, cost)


async def chat_completions(gateway: Gateway, request: Request) -> Response:
    started = time.perf_counter()
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID.match(rid):
        rid = next_request_id()
    request_id.set(rid)
    request.state.request_id = rid
    config = gateway.config
    # No keys configured: one branch here and one per later use of `grant`, nothing else.
    grant = None if gateway.keyring is None else gateway.authenticate(request)  # 401 before reading
    body = await read_body(request, config.ingress.max_body_bytes)
    chat = parse_chat_request(body)
    gateway.routes.resolve(chat.model)  # 404 for an unknown model before any bus hop
    request.state.model = chat.model
    timeout = gateway.timeout(request)
    namespace = "default" if grant is None else await gateway.admit(request, grant, chat.model)
    deadline = time.monotonic() + timeout
    headers = gateway.bus_headers(request, rid, time.time() + timeout, namespace)
    payload = encode(chat)
    cached, tier = await lookup(gateway, payload, headers, timeout)
    request.state.cache = _TIERS.get(tier or "", "miss")
    if chat.stream is True:
        include_usage = isinstance(chat.stream_options, StreamOptions) and chat.stream_options.include_usage is True
        if cached is not None:
            # Every chunk is known: one write carries them all (still one SSE event per chunk).
            frames = [b"".join(stream.replay(cached, include_usage))]
            return sse_response(iter(frames), rid, cached.provider, tier)
        on_end = None if grant is None else gateway.stream_charger(grant)
        response = await open_stream(gateway, payload, headers, rid, include_usage, deadline, on_end)
        metrics.TIME_TO_FIRST_CHUNK.labels(chat.model).observe(time.perf_counter() - started)
        return response
    if cached is not None:
        request.state.provider_seconds = 0.0
        return result_response(cached, rid, tier, started)
    reply = await route(gateway, payload, headers, deadline)
    match reply:
        case ChatResult():
            request.state.provider_seconds = reply.provider_seconds
            if grant is not None:  # cache hits cost nothing and are not charged
                gateway.charge(grant, reply.usage, reply.cost_usd)
            return result_response(reply, rid, None, started)
        case ErrorReply():
            raise from_reply(reply)
        case _:
            raise InternalError("unexpected reply on the bus")


class FastPath:
    """The hot endpoints answered straight from ASGI, ahead of FastAPI's routing and middleware.

    Profiled under load, FastAPI's per-request machinery (dependency solving, exception middleware,
    its telemetry check) was about a fifth of the ingress's CPU; everything else stays with FastAPI.
    """

    PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})

    def __init__(self, app: FastAPI, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        origin = "gateway"
        _ACTIVE.inc()
        try:
            with tracing.span("chat", request.headers, SpanKind.SERVER, _SPAN_ATTRIBUTES) as span:
                try:
                    response = await chat_completions(self.gateway, request)
                except GatewayError as exc:
                    origin = "provider" if exc.where.startswith("provider:") else "gateway"
                    response = error_response(exc, request)
                    tracing.failed(span, exc.http_status, exc.message)
                except Exception:  # the HTTP edge's last line: never a bare 500 page, never a hang
                    log.exception("unhandled error")
                    response = error_response(InternalError("internal error"), request)
                    tracing.failed(span, 500, "internal error")
                if self.gateway.keyring is not None and (
                    limit_headers := getattr(request.state, "limit_headers", None)
                ) is not None:
                    response.headers.update(limit_headers)
                if span is not None:
                    annotate(span, request, response)
                await response(scope, receive, send)
        finally:
            _ACTIVE.dec()
        observe(request, response.status_code, origin, time.perf_counter() - started)


_ACTIVE = metrics.ACTIVE.labels("ingress")
_SPAN_ATTRIBUTES = {"gen_ai.operation.name": "chat", "http.request.method": "POST"}


def annotate(span: Span, request: Request, response: Response) -> None:
    state = request.state
    span.set_attribute("http.response.status_code", response.status_code)
    if (model := getattr(state, "model", None)) is not None:
        span.update_name(f"chat {model}")
        span.set_attribute("gen_ai.request.model", model)
    span.set_attribute("llm_edge.cache", getattr(state, "cache", "none"))
    if (key := getattr(state, "key", None)) is not None:
        span.set_attribute("llm_edge.key", key)  # the key's configured name, never the key
    if (rid := getattr(state, "request_id", None)) is not None:
        span.set_attribute("llm_edge.request_id", rid)


def observe(request: Request, status: int, origin: str, elapsed: float) -> None:
    state = request.state
    model = getattr(state, "model", "unresolved")
    cache = getattr(state, "cache", "none")
    metrics.REQUESTS.labels(model, str(status), origin, cache).inc()
    metrics.REQUEST_DURATION.labels(model).observe(elapsed)
    provider_seconds = getattr(state, "provider_seconds", None)
    if status == 200 and provider_seconds is not None:
        metrics.GATEWAY_OVERHEAD.labels(cache).observe(max(0.0, elapsed - provider_seconds))


_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def next_request_id() -> str:
    """Unique across processes (random prefix) and cheap (no syscall per request)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


def _probe_or_scrape(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(("/health", "/metrics"))


# FastAPI's own spans (FastAPI 0.16x traces every request once a tracer provider is set): none for the
# probes and scrapes that arrive every few seconds (they buried the request traces in Jaeger), and none
# for its internals (dependencies, endpoint). Chat completions never reach FastAPI: shared/tracing.py
# traces them. Older FastAPI keeps unknown settings in `app.extra` and ignores them.
_FASTAPI_TELEMETRY = {"exclude": _probe_or_scrape, "operation_spans": False}


def create_app(config: Config, nc: Client | None = None) -> FastPath:
    gateway = Gateway(config)
    owns_connection = nc is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.nc = nc if nc is not None else await bus.connect(config.nats_url, "llm-edge-ingress")
        log.info("ingress ready on http://%s:%d", config.ingress.host, config.ingress.port)
        runtime.notify_ready()
        yield
        gateway.draining = True
        if gateway.keyring is not None:
            await gateway.keyring.limiter.close()
        tracing.shutdown()
        if owns_connection and gateway.nc is not None and not gateway.nc.is_closed:
            await gateway.nc.drain()

    app = FastAPI(title="LLM Edge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry=_FASTAPI_TELEMETRY)
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            error: GatewayError = NotFound(f"Unknown path: {request.method} {request.url.path}", code="not_found")
        else:
            error = InvalidRequest(str(exc.detail), status=exc.status_code, code="http_error")
        return error_response(error, request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(InternalError("internal error"), request)

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat(request: Request) -> Response:
        # Served by FastPath; declared here too so that other methods get a 405, not a 404.
        return await chat_completions(gateway, request)

    @app.get("/v1/models")
    @app.get("/models")
    async def models(request: Request) -> Response:
        names = gateway.routes.public_models()
        if (grant := gateway.authenticate(request)) is not None and gateway.keyring is not None:
            names = gateway.keyring.visible(grant, names)
        cards = [shapes.ModelCard(id=name) for name in names]
        return Response(shapes.encode(shapes.ModelList(data=cards)), media_type=JSON)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live")
    async def live() -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    @app.get("/health/ready")
    async def ready() -> Response:
        ok = not gateway.draining and gateway.nc is not None and gateway.nc.is_connected
        body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
        return Response(body, status_code=200 if ok else 503, media_type=JSON)

    @app.get("/health")
    async def health_report() -> Response:
        report = await health.probe(gateway.nc, gateway.subjects, list(config.providers))
        status = 503 if report.status == "unhealthy" else 200
        return Response(shapes.encode(report), status_code=status, media_type=JSON)

    return FastPath(app, gateway)


async def lookup(
    gateway: Gateway, payload: bytes, headers: dict[str, str], timeout: float
) -> tuple[ChatResult | None, str | None]:
    """Ask the cache tier: a hit is one round trip; a miss says under which key the router stores it.

    The ingress asks each tier itself instead of letting the cache forward the miss: NATS reports "no
    responders" only to the publisher of a request, so a forwarded miss with no router running would be
    dropped silently and the client would wait for its deadline.
    """
    control = headers.get(Headers.CACHE_CONTROL, "")
    if not gateway.config.cache.enabled or ("no-cache" in control and "no-store" in control):
        return None, None  # nothing to read and nothing to store: the cache tier cannot help
    wait = min(gateway.config.cache.lookup_timeout_seconds, timeout)
    try:
        reply, msg = await bus.request(gateway.bus(), gateway.subjects.cache_lookup, payload, headers, wait)
    except (bus.NoResponders, DeadlineExceeded):
        return None, None  # the cache is optional: no instance, or too slow, means a miss
    match reply:
        case ChatResult():
            return reply, (msg.headers or {}).get(Headers.CACHE_TIER)
        case CacheMiss(key=key):
            if "no-store" not in headers.get(Headers.CACHE_CONTROL, ""):
                headers[Headers.CACHE_KEY] = key
    return None, None


async def route(gateway: Gateway, payload: bytes, headers: dict[str, str], deadline: float) -> Reply:
    try:
        reply, _ = await bus.request(
            gateway.bus(), gateway.subjects.route, payload, headers,
            deadline + _REPLY_GRACE_SECONDS - time.monotonic(),
        )
    except bus.NoResponders as exc:
        raise Unavailable("No router instance is running.", code="no_router") from exc
    except DeadlineExceeded as exc:
        raise DeadlineExceeded("The request did not complete before its deadline.") from exc
    return reply


async def open_stream(
    gateway: Gateway, payload: bytes, headers: dict[str, str], rid: str, include_usage: bool,
    deadline: float, on_end: Callable[[StreamEnd], None] | None = None,
) -> Response:
    bus_stream = stream.BusStream(gateway.bus(), gateway.subjects, rid)
    headers[Headers.STREAM] = "1"
    await bus_stream.open(payload, headers)
    try:
        first = await stream.first_frame(bus_stream, deadline + _REPLY_GRACE_SECONDS)
    except BaseException:
        await bus_stream.close()
        raise
    idle = gateway.config.ingress.stream_idle_timeout_seconds
    frames = stream.relay(bus_stream, first, include_usage, idle, deadline + _REPLY_GRACE_SECONDS, on_end)
    return sse_response(frames, rid, first.provider or "", None)


def sse_response(
    frames: AsyncIterator[bytes] | Iterator[bytes], rid: str, provider: str, tier: str | None
) -> Response:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={
            "x-request-id": rid,
            "x-llm-edge-provider": provider,
            "x-llm-edge-cache": _TIERS.get(tier or "", "miss"),
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        },
    )


def result_response(result: ChatResult, rid: str, tier: str | None, started: float) -> Response:
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Response(
        shapes.completion_json(result),
        media_type=JSON,
        headers={
            "x-request-id": rid,
            "x-llm-edge-provider": result.provider,
            "x-llm-edge-model": result.target_model,
            "x-llm-edge-cache": _TIERS.get(tier or "", "miss"),
            "x-llm-edge-latency-ms": f"{elapsed_ms:.2f}",
            "x-llm-edge-cost-usd": f"{result.cost_usd:.8f}",
        },
    )


def error_response(error: GatewayError, request: Request) -> Response:
    headers = {}
    rid = getattr(request.state, "request_id", None)
    if rid:
        headers["x-request-id"] = rid
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, int(error.retry_after + 0.999)))
    if error.http_status >= 500:
        log.warning("request failed: %d %s (%s)", error.http_status, error.code, error.where or "ingress")
    return Response(shapes.error_json(error), status_code=error.http_status, media_type=JSON, headers=headers)


def listening_socket(host: str, port: int) -> socket.socket:
    """SO_REUSEPORT, so a new ingress can listen beside the old one during a rolling restart; listening
    before the app starts, so connections that arrive meanwhile wait in the backlog instead of failing."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    import uvicorn

    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.gateway.draining = True  # readiness fails first; in-flight requests and streams finish
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = Server(
        uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
        )
    )
    await server.serve(sockets=[listening_socket(config.ingress.host, config.ingress.port)])
