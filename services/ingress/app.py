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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Literal

import msgspec
from fastapi import FastAPI
from opentelemetry.trace import Span, SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.ingress import (
    anthropic_dialect,
    anthropic_events,
    guard,
    health,
    responses_dialect,
    responses_events,
    responses_store,
    shapes,
    stream,
)
from services.ingress.auth import Grant
from services.ingress.counting import count_tokens
from services.ingress.gateway import (
    Gateway,
    lookup,
    open_stream,
    route,
    unless_client_leaves,
)
from services.ingress.parse import bus_payload, parse_chat_request, read_body
from services.ingress.responses import JSON, TIERS, error_response, result_response, sse_response
from services.ingress.responses_store import ResponseStore
from shared import bus, metrics, runtime, tracing
from shared.bus.kv import Bucket
from shared.config import Config
from shared.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    from_reply,
)
from shared.logs import request_id
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ChatResult,
    ErrorReply,
    StreamChunk,
    StreamOptions,
)
from shared.subjects import Headers

log = logging.getLogger("llm_edge.ingress")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Exchange:
    """One request on its way over the bus, whichever client dialect it arrived in."""

    __slots__ = ("cached", "chat", "deadline", "grant", "headers", "payload", "request", "rid", "tier")

    def __init__(self, request: Request, rid: str, chat: ChatRequest, payload: bytes, headers: dict[str, str],
                 deadline: float, cached: ChatResult | None, tier: str | None, grant: Grant | None) -> None:
        self.request, self.rid, self.chat, self.payload, self.headers = request, rid, chat, payload, headers
        self.deadline, self.cached, self.tier, self.grant = deadline, cached, tier, grant


async def begin(gateway: Gateway, request: Request, parse: Callable[[bytes], ChatRequest], *,
                cacheable: bool = True) -> Exchange:
    """Request id, body, model check, deadline and the cache lookup: the same for every dialect."""
    rid, grant, body = await accept(gateway, request)
    return await proceed(gateway, request, rid, grant, parse(body), cacheable=cacheable)


async def accept(gateway: Gateway, request: Request) -> tuple[str, Grant | None, bytes]:
    """The request id, the caller (401 before the body is read) and the body."""
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID.match(rid):
        rid = next_request_id()
    request_id.set(rid)
    request.state.request_id = rid
    # No keys configured: one branch here and one per later use of `grant`, nothing else.
    grant = None if gateway.keyring is None else gateway.authenticate(request)
    body = await read_body(request, gateway.config.ingress.max_body_bytes)
    return rid, grant, body


async def proceed(gateway: Gateway, request: Request, rid: str, grant: Grant | None, chat: ChatRequest, *,
                  cacheable: bool = True) -> Exchange:
    """The unified request's way in: model check, limits, deadline, bus headers, the cache lookup."""
    gateway.routes.resolve(chat.model)  # 404 for an unknown model before any bus hop
    request.state.model = chat.model
    # One line per request at info, on completion (observe); this one at debug: at info, the two lines cost
    # a fifth to a third of the ingress's throughput (docs/RELIABILITY.md, "Logs").
    if log.isEnabledFor(logging.DEBUG):  # `request.url` builds a URL object: only when it is printed
        log.debug("request %s %s model=%s stream=%s", request.method, request.scope["path"], chat.model,
                  chat.stream is True)
    timeout = gateway.timeout(request)
    namespace = "default" if grant is None else await gateway.admit(request, grant, chat.model)
    deadline = time.monotonic() + timeout
    headers = gateway.bus_headers(request, rid, time.time() + timeout, namespace)
    if isinstance(chat.anthropic, AnthropicParams) and chat.anthropic.prompt_caching:
        # The client asked the provider to cache a prefix (`cache_control`): it wants the provider's answer,
        # with the cache reads and writes in its usage that it pays for and will read back. Our cached answer
        # would report a cache use that never happened, and a conversation's requests almost never repeat
        # anyway (each turn adds to the history), so such a request neither reads nor fills our cache.
        headers[Headers.CACHE_CONTROL] = "no-cache,no-store"
    payload = bus_payload(chat)
    gateway.check_fits(payload)
    if not cacheable:
        return Exchange(request, rid, chat, payload, headers, deadline, None, None, grant)
    cached, tier = await lookup(gateway, chat, payload, headers, timeout)
    request.state.cache = TIERS.get(tier or "", "miss")
    return Exchange(request, rid, chat, payload, headers, deadline, cached, tier, grant)


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
    ex = await begin(gateway, request, lambda body: anthropic_dialect.parse_messages_request(
        body, request.headers, request.query_params.get("beta") == "true"))
    if ex.chat.stream is not True:
        response = await answer(gateway, request, ex, started, anthropic_dialect.message_json)
    elif ex.cached is not None:
        response = sse_response(iter([anthropic_events.replay(ex.cached)]), ex.rid, ex.cached.provider, ex.tier)
    else:
        response = await stream_reply(gateway, ex, started,
                                      lambda first: anthropic_events.EventWriter.starting(first, ex.rid))
    response.headers["request-id"] = ex.rid  # where Anthropic's SDKs look for it (`_request_id`)
    return response


async def count_message_tokens(gateway: Gateway, request: Request) -> Response:
    """`POST /v1/messages/count_tokens`: the model's targets, keys and limits as for `/v1/messages`; the
    provider counts (Anthropic) or its worker estimates with a tokenizer (`x-llm-edge-estimate: true`)."""
    ex = await begin(gateway, request, lambda body: anthropic_dialect.parse_messages_request(
        body, request.headers, request.query_params.get("beta") == "true", count=True), cacheable=False)
    count = await count_tokens(gateway, ex.payload, ex.headers, ex.deadline)
    headers = {"x-request-id": ex.rid, "request-id": ex.rid, "x-llm-edge-provider": count.provider}
    if count.estimated:
        headers["x-llm-edge-estimate"] = "true"
    return Response(anthropic_dialect.count_json(count), media_type=JSON, headers=headers)


async def create_response(gateway: Gateway, store: ResponseStore, request: Request) -> Response:
    """OpenAI's Responses API: the conversation so far (`previous_response_id`) and this input become one
    unified request on the common path; the answer is stored (unless `store: false`) for the next turn."""
    started = time.perf_counter()
    rid, grant, body = await accept(gateway, request)
    parsed = responses_dialect.decode_request(body)
    tenant = "default" if grant is None else grant.namespace
    previous = parsed.previous_response_id
    history = await store.history(tenant, previous) if isinstance(previous, str) else []
    native = _native_responses(gateway, parsed.model)
    chat, turn = responses_dialect.to_turn(parsed, history, native)
    if native:
        chat = msgspec.structs.replace(chat, responses_body=responses_dialect.native_body(body, history))
    ex = await proceed(gateway, request, rid, grant, chat)
    if chat.stream is not True:
        response = await answer(gateway, request, ex, started,
                                lambda result: responses_dialect.response_json(result, turn))
        if turn.stored and response.status_code == 200:
            await _keep(store, tenant, turn, bytes(response.body))
    elif ex.cached is not None:
        events, final = responses_events.replay(ex.cached, turn)
        if turn.stored:
            await _keep(store, tenant, turn, final)
        response = sse_response(iter([events]), ex.rid, ex.cached.provider, ex.tier)
    else:
        writers: list[responses_events.EventWriter] = []

        def writer(first: StreamChunk) -> responses_events.EventWriter:
            writers.append(responses_events.EventWriter(turn, first.model or chat.model))
            return writers[0]

        response = await stream_reply(gateway, ex, started, writer)
        if turn.stored and isinstance(response, StreamingResponse):
            response.body_iterator = _storing(response.body_iterator, writers[0], store, tenant, turn)
    if turn.toolbox.dropped:
        response.headers[responses_dialect.DROPPED_TOOLS_HEADER] = ",".join(sorted(set(turn.toolbox.dropped)))
    return response


def _native_responses(gateway: Gateway, model: str) -> bool:
    """Whether a target of `model` may be a provider with a Responses API of its own: only then does the
    unified request carry the Responses body (the router picks the target; the worker decides how to call)."""
    providers = gateway.config.providers
    return any((p := providers.get(t.provider)) is not None and p.native_responses()
               for t in gateway.routes.resolve(model))


async def _keep(store: ResponseStore, tenant: str, turn: responses_dialect.Turn, response: bytes) -> None:
    """A store that cannot write costs the next turn its context, not this turn its answer."""
    try:
        await store.save(tenant, turn, response)
    except GatewayError as exc:
        log.warning("response %s not stored: %s", turn.id, exc.message)


async def _storing(
    frames: AsyncIterable[Any], writer: responses_events.EventWriter, store: ResponseStore, tenant: str,
    turn: responses_dialect.Turn,
) -> AsyncIterator[Any]:
    """The stream, with the finished response stored before `response.completed` leaves: a client that
    continues the conversation the moment it reads that event finds it."""
    async for data in frames:
        if writer.final is not None:
            await _keep(store, tenant, turn, writer.final)
            writer.final = None
        yield data


async def stream_reply(
    gateway: Gateway, ex: Exchange, started: float, writer: Callable[[StreamChunk], stream.Writer]
) -> Response:
    on_end = None if ex.grant is None else gateway.stream_charger(ex.grant)
    response = await open_stream(gateway, ex.request, ex.payload, ex.headers, ex.rid, ex.deadline, writer, on_end)
    ex.request.state.provider = response.headers.get("x-llm-edge-provider")
    metrics.TIME_TO_FIRST_CHUNK.labels(ex.chat.model).observe(time.perf_counter() - started)
    return response


async def answer(
    gateway: Gateway, request: Request, ex: Exchange, started: float, render: Callable[[ChatResult], bytes]
) -> Response:
    """The whole answer, from the cache or the router, as one JSON body in the client's dialect."""
    if ex.cached is not None:
        request.state.provider_seconds = 0.0
        request.state.provider = ex.cached.provider
        return result_response(ex.cached, ex.rid, ex.tier, started, render)
    # A client that hangs up is not waited for (counted as a 499), and the cancel notice the bus then sends
    # (keyed by the request's bus id) closes the worker's upstream call.
    reply = await unless_client_leaves(request, route(gateway, ex.payload, ex.headers, ex.deadline))
    match reply:
        case ChatResult():
            request.state.provider_seconds = reply.provider_seconds
            request.state.provider = reply.provider
            if ex.grant is not None:  # cache hits cost nothing and are not charged
                gateway.charge(ex.grant, reply.usage, reply.cost_usd)
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
        **dict.fromkeys(anthropic_dialect.COUNT_PATHS, count_message_tokens),
    }

    def __init__(self, app: FastAPI, gateway: Gateway,
                 handlers: dict[str, Callable[[Gateway, Request], Awaitable[Response]]] | None = None) -> None:
        self.app = app
        self.gateway = gateway
        self.handlers = {**self.HANDLERS, **(handlers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gateway.draining and scope["type"] == "http":
            send = _closing(send)
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
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
                except ClientDisconnect:
                    # The client hung up before its body arrived: nobody to answer, nothing failed here.
                    # Counted as nginx's 499 (client closed request), not as an error of the gateway.
                    observe(request, 499, "client", time.perf_counter() - started)
                    return
                except GatewayError as exc:
                    origin = "provider" if exc.where.startswith("provider:") else "gateway"
                    if origin == "provider":
                        request.state.provider = exc.where.removeprefix("provider:")
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


def _closing(send: Send) -> Send:
    """While draining: every response says `Connection: close`, so a keep-alive client opens its next
    connection elsewhere (the new ingress) instead of finding this one closed under its request."""

    async def closing(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return closing


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
    log.info("request done: %d%s model=%s cache=%s provider=%s in %.1f ms", status,
             " (client left)" if status == 499 else "", model, cache, getattr(state, "provider", "-"),
             elapsed * 1000)
    metrics.REQUESTS.labels(getattr(state, "provider", None) or "none", model, str(status), origin, cache).inc()
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
_FASTAPI_TELEMETRY: Any = {"exclude": _probe_or_scrape, "operation_spans": False}


def create_app(config: Config, connection: bus.Bus | None = None) -> FastPath:  # noqa: C901 - one app: being reshaped (#11)
    gateway = Gateway(config)
    owns_connection = connection is None
    stores: list[ResponseStore] = []

    def response_store() -> ResponseStore:
        """The shared store of the Responses API, on the bus connection (known once the app started)."""
        if not stores:
            retention = config.responses
            stores.append(ResponseStore(Bucket(gateway.bus(), gateway.subjects.responses_bucket,
                                               retention.retention_seconds, retention.storage)))
        return stores[0]

    async def responses_create(gateway: Gateway, request: Request) -> Response:
        return await create_response(gateway, response_store(), request)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.connection = connection or await bus.connect(config.nats_url, "llm-edge-ingress")
        gateway.warn_if_bus_smaller(gateway.connection)
        await gateway.listen_for_fills(gateway.connection)
        log.info("ingress ready on http://%s:%d", config.ingress.host, config.ingress.port)
        runtime.notify_ready()
        yield
        gateway.draining = True
        if gateway.keyring is not None:
            await gateway.keyring.limiter.close()
        tracing.shutdown()
        if owns_connection and gateway.connection is not None and not gateway.connection.closed:
            await gateway.connection.drain()

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

    @app.post("/v1/messages/count_tokens")
    @app.post("/messages/count_tokens")
    async def messages_count_tokens(request: Request) -> Response:
        return await count_message_tokens(gateway, request)  # served by FastPath too

    @app.post("/v1/responses")
    @app.post("/responses")
    async def responses(request: Request) -> Response:
        return await responses_create(gateway, request)  # served by FastPath, as chat completions are

    @app.get("/v1/responses/{response_id}")
    @app.get("/responses/{response_id}")
    async def get_response(request: Request, response_id: str) -> Response:
        stored = await response_store().load(_tenant(request), response_id)
        if stored is None:
            raise responses_store.not_found(response_id)
        return Response(stored.response, media_type=JSON)

    @app.delete("/v1/responses/{response_id}")
    @app.delete("/responses/{response_id}")
    async def delete_response(request: Request, response_id: str) -> Response:
        if not await response_store().delete(_tenant(request), response_id):
            raise responses_store.not_found(response_id)
        body = responses_dialect.encode({"id": response_id, "object": "response.deleted", "deleted": True})
        return Response(body, media_type=JSON)

    @app.get("/v1/responses/{response_id}/input_items")
    @app.get("/responses/{response_id}/input_items")
    async def input_items(request: Request, response_id: str, order: Literal["asc", "desc"] = "desc",
                          limit: int = 20, after: str | None = None) -> Response:
        stored = await response_store().load(_tenant(request), response_id)
        if stored is None:
            raise responses_store.not_found(response_id)
        if not 1 <= limit <= 100:
            raise InvalidRequest("`limit` must be between 1 and 100.", param="limit")
        return Response(responses_store.item_page(stored, order, limit, after), media_type=JSON)

    def _tenant(request: Request) -> str:
        grant = gateway.authenticate(request)
        return "default" if grant is None else grant.namespace

    @app.get("/v1/models")
    @app.get("/models")
    async def models(request: Request) -> Response:
        names = gateway.routes.public_models()
        if (grant := gateway.authenticate(request)) is not None and gateway.keyring is not None:
            names = gateway.keyring.visible(grant, names)
        cards = [shapes.ModelCard(id=name) for name in names]
        return Response(shapes.encode(shapes.ModelList(data=cards)), media_type=JSON)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        if not config.metrics_enabled:  # ENABLE_METRICS=false
            raise StarletteHTTPException(404)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live")
    async def live() -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    @app.get("/health/ready")
    async def ready() -> Response:
        ok = not gateway.draining and gateway.connection is not None and gateway.connection.connected
        body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
        return Response(body, status_code=200 if ok else 503, media_type=JSON)

    @app.get("/health")
    async def health_report() -> Response:
        redis = gateway.keyring.limiter.redis if gateway.keyring is not None else None
        report = await health.probe(gateway.connection, gateway.subjects, list(config.providers),
                                    None if redis is None else redis.ping)
        status = 503 if report.status == "unhealthy" else 200
        return Response(shapes.encode(report), status_code=status, media_type=JSON)

    return FastPath(app, gateway, dict.fromkeys(responses_dialect.PATHS, responses_create))


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    import uvicorn

    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.gateway.draining = True  # readiness fails first; in-flight requests and streams finish
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's shutdown, but drained the way a load balancer expects: stop accepting, and never
            close a keep-alive connection under a client that may be sending on it (that request would be
            lost). A connection closes after a response that said `Connection: close` (every response
            begun from now on says it: FastPath while draining), or at its keep-alive timeout when idle,
            as idle connections always do."""
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                # A response not yet begun will say `Connection: close`. One already begun has promised
                # keep-alive in its head: closing after it would race the client's next request on it
                # (uvicorn's own shutdown loses those), so it goes idle and its next request is told.
                if cycle is not None and not cycle.response_complete and not cycle.response_started:
                    connection.shutdown()
            try:
                async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                    await self._wait_tasks_to_complete()
            except TimeoutError:
                log.error("%d request(s) still running after the grace period; cancelled",
                          len(self.server_state.tasks))
                for task in self.server_state.tasks:
                    task.cancel()
            if not self.force_exit:
                await self.lifespan.shutdown()

    server = Server(
        uvicorn.Config(
            app,
            loop="none",
            http=guard.guarded(config.ingress),  # httptools, with limits for slow and oversized clients
            timeout_keep_alive=config.ingress.keep_alive_seconds,
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
        )
    )
    listener = runtime.inherited_listener() or runtime.listening_socket(config.ingress.host, config.ingress.port)
    await server.serve(sockets=[listener])
