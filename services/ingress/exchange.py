"""The common path of a model request, whichever dialect it arrived in: accepted (request id, caller,
body), checked (model, limits, size), looked up in the cache, then answered from the cache or the router
as one body or a stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from services.ingress import pii, request_log, stream
from services.ingress.context import Call
from services.ingress.gateway import Gateway, lookup, open_stream, route, unless_client_leaves
from services.ingress.parse import bus_payload, read_body
from services.ingress.responses import TIERS, result_response
from shared import metrics
from shared.errors import InternalError, from_reply
from shared.logs import request_id
from shared.messages import AnthropicParams, ChatRequest, ChatResult, ErrorReply, StreamChunk
from shared.pii.restore import Restorer
from shared.subjects import Headers

log = logging.getLogger("llm_edge.ingress")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Exchange:
    """One model request on its way over the bus: the unified request, its bus form and headers, its
    deadline, and what the cache had."""

    __slots__ = ("cached", "call", "chat", "deadline", "headers", "payload", "request", "restorer", "tier")

    def __init__(self, request: Request, call: Call, chat: ChatRequest, payload: bytes, headers: dict[str, str],
                 deadline: float, cached: ChatResult | None, tier: str | None,
                 restorer: Restorer | None = None) -> None:
        self.request, self.call, self.chat, self.payload, self.headers = request, call, chat, payload, headers
        self.deadline, self.cached, self.tier = deadline, cached, tier
        self.restorer = restorer  # redact_restore: puts the request's values back into the answer

    @property
    def rid(self) -> str:
        return self.call.rid or ""


async def begin(request: Request, parse: Callable[[bytes], ChatRequest], *, cacheable: bool = True) -> Exchange:
    """Request id, body, model check, deadline and the cache lookup: the same for every dialect."""
    call, body = await accept(request)
    return await proceed(request, call, parse(body), cacheable=cacheable)


async def accept(request: Request) -> tuple[Call, bytes]:
    """The request id, the caller (401 before the body is read) and the body."""
    call = Call.of(request)
    gateway = call.gateway
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID.match(rid):
        rid = next_request_id()
    request_id.set(rid)
    call.rid = rid
    # No keys configured: one branch here and one per later use of `grant`, nothing else.
    call.grant = None if gateway.keyring is None else await gateway.authenticate(request)
    body = await read_body(request, gateway.config.ingress.max_body_bytes)
    return call, body


async def proceed(request: Request, call: Call, chat: ChatRequest, *, cacheable: bool = True) -> Exchange:
    """The unified request's way in: model check, limits, deadline, bus headers, the cache lookup."""
    gateway = call.gateway
    gateway.routes.resolve(chat.model)  # 404 for an unknown model before any bus hop
    call.model = chat.model
    # One line per request at info, on completion (edge.observe); this one at debug: at info, the two lines
    # cost a fifth to a third of the ingress's throughput (docs/RELIABILITY.md, "Logs").
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request %s %s model=%s stream=%s", request.method, request.scope["path"], chat.model,
                  chat.stream is True)
    timeout = gateway.timeout(request)
    grant = call.grant
    namespace = "default" if grant is None else await gateway.admit(request, grant, chat.model)
    deadline = time.monotonic() + timeout
    headers = gateway.bus_headers(request, call.rid or "", time.time() + timeout, namespace)
    if isinstance(chat.anthropic, AnthropicParams) and chat.anthropic.prompt_caching:
        # The client asked the provider to cache a prefix (`cache_control`): it wants the provider's answer,
        # with the cache reads and writes in its usage that it pays for and will read back. Our cached answer
        # would report a cache use that never happened, and a conversation's requests almost never repeat
        # anyway (each turn adds to the history), so such a request neither reads nor fills our cache.
        headers[Headers.CACHE_CONTROL] = "no-cache,no-store"
    chat, restorer = await gateway.pii.redact(chat, grant)  # what leaves, and the cache key: placeholders only
    payload = bus_payload(chat)
    gateway.check_fits(payload)
    if not cacheable:
        return Exchange(request, call, chat, payload, headers, deadline, None, None)
    cached, tier = await lookup(gateway, chat, payload, headers, timeout)
    call.cache = TIERS.get(tier or "", "miss")
    if cached is not None and restorer is not None:
        cached = restorer.result(cached)
    if cached is not None:
        call.usage = cached.usage  # what the client is told; a hit costs nothing
    return Exchange(request, call, chat, payload, headers, deadline, cached, tier, restorer)


async def stream_reply(ex: Exchange, writer: Callable[[StreamChunk], stream.Writer]) -> Response:
    """The answer as a stream: the first chunk is awaited here, the rest relayed as they come."""
    gateway: Gateway = ex.call.gateway
    on_end = gateway.stream_charger(ex.call.grant, ex.chat.model)
    writer = pii.restoring_writer(writer, ex.restorer)
    if gateway.request_log is not None:
        writer = request_log.noting(writer, ex.call)
    response = await open_stream(gateway, ex.request, ex.payload, ex.headers, ex.rid, ex.deadline, writer, on_end)
    ex.call.provider = response.headers.get("x-llm-edge-provider")
    metrics.TIME_TO_FIRST_CHUNK.labels(ex.chat.model).observe(time.perf_counter() - ex.call.started)
    return response


async def answer(ex: Exchange, render: Callable[[ChatResult], bytes]) -> Response:
    """The whole answer, from the cache or the router, as one JSON body in the client's dialect."""
    call = ex.call
    if ex.cached is not None:
        call.provider_seconds = 0.0
        call.provider = ex.cached.provider
        return result_response(ex.cached, ex.rid, ex.tier, call.started, render)
    # A client that hangs up is not waited for (counted as a 499), and the cancel notice the bus then sends
    # (keyed by the request's bus id) closes the worker's upstream call.
    reply = await unless_client_leaves(ex.request, route(call.gateway, ex.payload, ex.headers, ex.deadline))
    match reply:
        case ChatResult():
            call.provider_seconds = reply.provider_seconds
            call.provider = reply.provider
            call.usage, call.cost_usd = reply.usage, reply.cost_usd
            call.gateway.charge(call.grant, ex.chat.model, reply.usage, reply.cost_usd)  # hits are not charged
            return result_response(reply, ex.rid, None, call.started, pii.restoring_render(render, ex.restorer))
        case ErrorReply():
            raise from_reply(reply)
        case _:
            raise InternalError("unexpected reply on the bus")


_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def next_request_id() -> str:
    """Unique across processes (random prefix) and cheap (no syscall per request)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"
