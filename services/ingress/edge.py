"""The ingress's one way of running an endpoint, and its one shortcut past FastAPI.

Every route of the ingress is an `EdgeRoute`: `serve` runs it, turning any exception into the called
dialect's error (`responses.exception_response`), and, for the model-serving routes (`ModelRoute`), writes
the request's log line, metrics and trace span from its `Call`. The routes are declared once, on the
dialects' `APIRouter`s (`services/ingress/endpoints/`), and FastAPI routes every request to them, with one
exception: `Edge` sends a POST to one of the fixed paths of a model-serving route straight to that route's
endpoint (a dict lookup on the path). Profiled under load, FastAPI's per-request machinery (its middleware
stack, the match over the included routers, dependency solving) was about a fifth of the ingress's CPU on
those routes; their endpoints take the request alone, so nothing FastAPI would solve for them is skipped.
Everything else (other methods, 404s, the GET routes, the OpenAPI document) goes through FastAPI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, ClassVar

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from opentelemetry.trace import Span, SpanKind
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingress.context import SCOPE_KEY, Call
from services.ingress.gateway import Gateway
from services.ingress.responses import exception_response
from shared import logs, metrics, tracing
from shared.errors import GatewayError

log = logging.getLogger("llm_edge.ingress")

Endpoint = Callable[[Request], Awaitable[Response]]


class EdgeRoute(APIRoute):
    """A route whose errors leave in the dialect's shape, whoever raised them (`serve`)."""

    observed: ClassVar[bool] = False  # counted in metrics, logged and traced as a model request

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(super().handle, scope, receive, send, self.observed)

    def direct(self) -> ASGIApp | None:
        """The route as one ASGI app without FastAPI's routing and parameter solving: for an endpoint that
        takes the request alone (so nothing is solved) on a fixed path; None for any other."""
        if self.dependant.path_params or self.dependant.query_params or self.dependant.dependencies \
                or self.dependant.body_params or self.dependant.header_params:
            return None
        endpoint: Endpoint = self.endpoint

        async def plain(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive))
            await response(scope, receive, send)

        observed = self.observed

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await serve(plain, scope, receive, send, observed)

        return app


class ModelRoute(EdgeRoute):
    """A route that serves a model's answer (chat, Messages, Responses, token counts)."""

    observed = True


async def serve(app: ASGIApp, scope: Scope, receive: Receive, send: Send, observed: bool) -> None:
    """Run one route: any exception before its response began becomes the dialect's error response (one
    place for all of them); a model request is also logged, counted and traced here."""
    call = Call.of(scope)

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            call.status = message["status"]
            if call.limit_headers is not None:  # the caller key's rate-limit state, on every answer
                message = {**message, "headers": [*message.get("headers", []), *(
                    (name.encode(), value.encode()) for name, value in call.limit_headers.items())]}
        await send(message)

    if not observed:
        await _run(app, call, scope, receive, sending)
        return
    if (requests := call.gateway.request_log) is not None:
        tap = requests.tap(scope, receive, sending)
        receive, sending = tap.receive, tap.send
    _ACTIVE.inc()
    try:
        carrier = Request(scope).headers if tracing.enabled() else None
        with tracing.span("chat", carrier, SpanKind.SERVER, _SPAN_ATTRIBUTES) as span:
            failure = await _run(app, call, scope, receive, sending)
            origin = _origin(failure, call, span)
            if span is not None:
                annotate(span, call)
    finally:
        _ACTIVE.dec()
        if requests is not None:
            tap.done(call)  # the request log's record, published in the background
    observe(call, origin)


async def _run(app: ASGIApp, call: Call, scope: Scope, receive: Receive, send: Send) -> Exception | None:
    """The route; an exception raised before its response began is answered here, and returned."""
    try:
        await app(scope, receive, send)
    except Exception as exc:
        if call.status:  # a stream's own failure: it ends with an error event (`stream.relay`)
            raise
        if isinstance(exc, ClientDisconnect):
            # The client hung up before its answer began: nobody to answer, nothing failed here. Counted
            # as nginx's 499 (client closed request), not as an error of the gateway.
            call.status = 499
        else:
            await exception_response(exc, Request(scope, receive))(scope, receive, send)
        return exc
    return None


def _origin(failure: Exception | None, call: Call, span: Span | None) -> str:
    """Whose failure an answer was, for the metrics: the gateway's, a provider's or the client's."""
    match failure:
        case None:
            return "gateway"
        case ClientDisconnect():
            return "client"
        case GatewayError(where=where, message=message):
            tracing.failed(span, call.status, message)
            if where.startswith("provider:"):
                call.provider = where.removeprefix("provider:")
                return "provider"
            return "gateway"
    tracing.failed(span, 500, "internal error")
    return "gateway"


class Edge:
    """The ingress as ASGI: a `Call` for every HTTP request, `Connection: close` while draining, and the one
    shortcut (see the module's docstring) in front of the FastAPI app."""

    def __init__(self, app: FastAPI, gateway: Gateway, routers: Iterable[APIRouter]) -> None:
        self.app = app
        self.gateway = gateway
        self.direct: dict[str, ASGIApp] = {}
        for router in routers:
            for route in router.routes:
                if isinstance(route, ModelRoute) and route.methods == {"POST"} and (app_ := route.direct()):
                    self.direct[route.path] = app_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.gateway.draining:
            send = _closing(send)
        scope[SCOPE_KEY] = Call(self.gateway)
        if scope["method"] == "POST" and (direct := self.direct.get(scope["path"])) is not None:
            await direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _closing(send: Send) -> Send:
    """While draining: every response says `Connection: close`, so a keep-alive client opens its next
    connection elsewhere (the new ingress) instead of finding this one closed under its request."""

    async def closing(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return closing


_ACTIVE = metrics.ACTIVE.labels("ingress")
_REQUESTS = metrics.Children(metrics.REQUESTS)
_REQUEST_DURATION = metrics.Children(metrics.REQUEST_DURATION)
_GATEWAY_OVERHEAD = metrics.Children(metrics.GATEWAY_OVERHEAD)
_SPAN_ATTRIBUTES = {"gen_ai.operation.name": "chat", "http.request.method": "POST"}


def annotate(span: Span, call: Call) -> None:
    span.set_attribute("http.response.status_code", call.status)
    if call.model != "unresolved":
        span.update_name(f"{call.operation} {call.model}")
        span.set_attribute("gen_ai.request.model", call.model)
        span.set_attribute("gen_ai.operation.name", call.operation)
    span.set_attribute("llm_edge.cache", call.cache)
    if call.key is not None:
        span.set_attribute("llm_edge.key", call.key)  # the key's configured name, never the key
    if call.rid is not None:
        span.set_attribute("llm_edge.request_id", call.rid)


def observe(call: Call, origin: str) -> None:
    """The request's one log line (at info) and its metrics, once its answer is out."""
    elapsed = time.perf_counter() - call.started
    status = call.status
    logs.info(log, f"request done: {status}{' (client left)' if status == 499 else ''} model={call.model} "
                   f"cache={call.cache} provider={call.provider or '-'} in {elapsed * 1000:.1f} ms")
    _REQUESTS(call.provider or "none", call.model, str(status), origin, call.cache).inc()
    _REQUEST_DURATION(call.model).observe(elapsed)
    if status == 200 and call.provider_seconds is not None:
        _GATEWAY_OVERHEAD(call.cache).observe(max(0.0, elapsed - call.provider_seconds))
