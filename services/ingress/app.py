"""The HTTP edge: OpenAI-compatible endpoints (and Anthropic's Messages API beside them) that turn a request
into one bus message and the reply into JSON or SSE. Every error leaves in the called dialect's error shape
with its status, through one exception handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from fastapi import FastAPI
from nats.aio.client import Client
from opentelemetry.trace import Span, SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.ingress import anthropic_dialect, anthropic_events, health, shapes, stream
from services.ingress.parse import parse_chat_request, read_body
from services.ingress.responses import JSON, TIERS, error_response, result_response, sse_response
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
from shared.logs import request_id
from shared.messages import (
    CacheMiss,
    ChatRequest,
    ChatResult,
    ErrorReply,
    Reply,
    StreamChunk,
    StreamOptions,
    encode,
)
from shared.subjects import Headers, Subjects

log = logging.getLogger("llm_edge.ingress")

# Extra time granted to the bus beyond the client's deadline, so the hop that ran out of time can still
# answer with its own, more precise error.
_REPLY_GRACE_SECONDS = 0.25
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Gateway:
    """What the routes share: configuration, the bus connection, subjects."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subjects = Subjects(config.prefix)
        self.routes = Routes(config)
        self.nc: Client | None = None
        self.draining = False

    def bus(self) -> Client:
        if self.nc is None or not self.nc.is_connected:
            raise Unavailable("the message bus is not connected", code="bus_unavailable")
        return self.nc

    def bus_headers(self, request: Request, rid: str, deadline: float) -> dict[str, str]:
        headers = {
            Headers.REQUEST_ID: rid,
            Headers.DEADLINE: str(int(deadline * 1000)),
            Headers.NAMESPACE: "default",
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


class Exchange:
    """One request on its way over the bus, whichever client dialect it arrived in."""

    __slots__ = ("cached", "chat", "deadline", "headers", "payload", "rid", "tier")

    def __init__(self, rid: str, chat: ChatRequest, payload: bytes, headers: dict[str, str], deadline: float,
                 cached: ChatResult | None, tier: str | None) -> None:
        self.rid, self.chat, self.payload, self.headers = rid, chat, payload, headers
        self.deadline, self.cached, self.tier = deadline, cached, tier


async def begin(gateway: Gateway, request: Request, parse: Callable[[bytes], ChatRequest]) -> Exchange:
    """Request id, body, model check, deadline and the cache lookup: the same for every dialect."""
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID.match(rid):
        rid = next_request_id()
    request_id.set(rid)
    request.state.request_id = rid
    body = await read_body(request, gateway.config.ingress.max_body_bytes)
    chat = parse(body)
    gateway.routes.resolve(chat.model)  # 404 for an unknown model before any bus hop
    request.state.model = chat.model
    timeout = gateway.timeout(request)
    deadline = time.monotonic() + timeout
    headers = gateway.bus_headers(request, rid, time.time() + timeout)
    payload = encode(chat)
    cached, tier = await lookup(gateway, payload, headers, timeout)
    request.state.cache = TIERS.get(tier or "", "miss")
    return Exchange(rid, chat, payload, headers, deadline, cached, tier)


async def chat_completions(gateway: Gateway, request: Request) -> Response:
    started = time.perf_counter()
    ex = await begin(gateway, request, parse_chat_request)
    chat = ex.chat
    if chat.stream is True:
        include_usage = isinstance(chat.stream_options, StreamOptions) and chat.stream_options.include_usage is True
        if ex.cached is not None:
            # Every chunk is known: one write carries them all (still one SSE event per chunk).
            frames = [b"".join(stream.replay(ex.cached, include_usage))]
            return sse_response(iter(frames), ex.rid, ex.cached.provider, ex.tier)
        return await stream_reply(gateway, ex, started,
                                  lambda first: stream.ChunkWriter.starting(first, ex.rid, include_usage))
    return await answer(gateway, request, ex, started, shapes.completion_json)


async def create_message(gateway: Gateway, request: Request) -> Response:
    """Anthropic's Messages API: the same unified request on the same path (cache, routing, fallback,
    metrics, cost), only translated at the edge, in and out."""
    started = time.perf_counter()
    ex = await begin(gateway, request, anthropic_dialect.parse_messages_request)
    if ex.chat.stream is not True:
        response = await answer(gateway, request, ex, started, anthropic_dialect.message_json)
    elif ex.cached is not None:
        response = sse_response(iter([anthropic_events.replay(ex.cached)]), ex.rid, ex.cached.provider, ex.tier)
    else:
        response = await stream_reply(gateway, ex, started,
                                      lambda first: anthropic_events.EventWriter.starting(first, ex.rid))
    response.headers["request-id"] = ex.rid  # where Anthropic's SDKs look for it (`_request_id`)
    return response


async def stream_reply(
    gateway: Gateway, ex: Exchange, started: float, writer: Callable[[StreamChunk], stream.Writer]
) -> Response:
    response = await open_stream(gateway, ex.payload, ex.headers, ex.rid, ex.deadline, writer)
    metrics.TIME_TO_FIRST_CHUNK.labels(ex.chat.model).observe(time.perf_counter() - started)
    return response


async def answer(
    gateway: Gateway, request: Request, ex: Exchange, started: float, render: Callable[[ChatResult], bytes]
) -> Response:
    """The whole answer, from the cache or the router, as one JSON body in the client's dialect."""
    if ex.cached is not None:
        request.state.provider_seconds = 0.0
        return result_response(ex.cached, ex.rid, ex.tier, started, render)
    reply = await route(gateway, ex.payload, ex.headers, ex.deadline)
    match reply:
        case ChatResult():
            request.state.provider_seconds = reply.provider_seconds
            return result_response(reply, ex.rid, None, started, render)
        case ErrorReply():
            raise from_reply(reply)
        case _:
            raise InternalError("unexpected reply on the bus")


class FastPath:
    """The hot endpoints answered straight from ASGI, ahead of FastAPI's routing and middleware.

    Profiled under load, FastAPI's per-request machinery (dependency solving, exception middleware,
    its telemetry check) was about a fifth of the ingress's CPU; everything else stays with FastAPI.
    """

    HANDLERS: ClassVar[dict[str, Callable[[Gateway, Request], Awaitable[Response]]]] = {
        "/v1/chat/completions": chat_completions,
        "/chat/completions": chat_completions,
        **dict.fromkeys(anthropic_dialect.PATHS, create_message),
    }

    def __init__(self, app: FastAPI, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        origin = "gateway"
        _ACTIVE.inc()
        try:
            with tracing.span("chat", request.headers, SpanKind.SERVER, _SPAN_ATTRIBUTES) as span:
                try:
                    response = await handler(self.gateway, request)
                except GatewayError as exc:
                    origin = "provider" if exc.where.startswith("provider:") else "gateway"
                    response = error_response(exc, request)
                    tracing.failed(span, exc.http_status, exc.message)
                except Exception:  # the HTTP edge's last line: never a bare 500 page, never a hang
                    log.exception("unhandled error")
                    response = error_response(InternalError("internal error"), request)
                    tracing.failed(span, 500, "internal error")
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

    @app.post("/v1/messages")
    @app.post("/messages")
    async def messages(request: Request) -> Response:
        return await create_message(gateway, request)  # served by FastPath, as chat completions are

    @app.get("/v1/models")
    @app.get("/models")
    async def models() -> Response:
        cards = [shapes.ModelCard(id=name) for name in gateway.routes.public_models()]
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
    """Ask a router for the answer. A router that dies while it holds the request goes silent (no
    heartbeats): the request goes to another router once, rather than waiting for the deadline."""
    for attempt in (1, 2):
        try:
            reply, _ = await bus.request(
                gateway.bus(), gateway.subjects.route, payload, headers,
                deadline + _REPLY_GRACE_SECONDS - time.monotonic(), bus.HEARTBEAT_SECONDS,
            )
        except bus.NoResponders as exc:
            raise Unavailable("No router instance is running.", code="no_router") from exc
        except DeadlineExceeded as exc:
            raise DeadlineExceeded("The request did not complete before its deadline.") from exc
        except bus.Lost as exc:
            log.warning("the router handling the request went silent (attempt %d)", attempt)
            if attempt == 2:
                raise Unavailable("The router handling the request stopped answering.", code="router_lost") from exc
            continue
        return reply
    raise AssertionError("unreachable")


async def open_stream(
    gateway: Gateway, payload: bytes, headers: dict[str, str], rid: str, deadline: float,
    writer: Callable[[StreamChunk], stream.Writer],
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
    frames = stream.relay(bus_stream, first, writer(first), idle, deadline + _REPLY_GRACE_SECONDS)
    return sse_response(frames, rid, first.provider or "", None)


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
