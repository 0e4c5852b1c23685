"""What the ingress's endpoints share (configuration, the bus connection, keys and limits) and how a
request reaches the other tiers: the cache lookup, the router, a stream's inbox.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from services.ingress import limits, stream
from services.ingress.auth import Grant, keyring
from services.ingress.context import Call
from services.ingress.guard import DEPARTURE, Departure
from services.ingress.limits import Refused
from services.ingress.pii import Policy
from services.ingress.request_log import RequestLog
from services.ingress.responses import SemanticTier, sse_response
from services.ingress.responses_store import ResponseStore
from services.ingress.spend import Spend
from shared import bus, metrics, tracing
from shared.bus.kv import Bucket
from shared.cache import semantic
from shared.cache.key import cache_key
from shared.cache.l1 import L1Cache, fill_ttl
from shared.config import Config
from shared.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    InvalidRequest,
    Unavailable,
)
from shared.logs import key_name
from shared.messages import (
    CacheMiss,
    ChatRequest,
    ChatResult,
    Reply,
    StreamChunk,
    StreamEnd,
    Usage,
    reply_decoder,
    vector_fill_decoder,
)
from shared.routes import Routes
from shared.subjects import Headers, Subjects

log = logging.getLogger("llm_edge.ingress")

T = TypeVar("T")

# Room left in a bus message for its headers (request id, deadline, trace context, cache key...).
_HEADER_ROOM_BYTES = 64 * 1024
MAX_CACHE_TTL_SECONDS = 365 * 24 * 3600.0

# Extra time granted to the bus beyond the client's deadline, so the hop that ran out of time can still
# answer with its own, more precise error.
_REPLY_GRACE_SECONDS = 0.25


def cache_ttl(value: str) -> float:
    """`x-llm-edge-cache-ttl`: seconds, finite, at least a millisecond (Redis keeps TTLs in ms) and at most
    a year. Anything else is the client's error: `nan` or `inf` would never expire, and a TTL Redis
    refuses (1e30) would fail the write."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0.001 <= seconds <= MAX_CACHE_TTL_SECONDS:  # false for nan as well
        raise InvalidRequest(f"`x-llm-edge-cache-ttl` must be a number of seconds between 0.001 and "
                             f"{MAX_CACHE_TTL_SECONDS:.0f}.", code="invalid_cache_ttl")
    return seconds


class Gateway:
    """What the routes share: configuration, the bus connection, subjects."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subjects = Subjects(config.prefix)
        self.routes = Routes(config)
        self.connection: bus.Bus | None = None
        self.draining = False
        self.heartbeat = bus.HEARTBEAT_SECONDS  # how often a router holding our request must say so
        # None when no keys are configured: the gateway is open, as if every caller were one tenant.
        self.keyring = keyring(config)
        self.spend = Spend(config)  # spend per key, tenant and model (the admin API reports it)
        self.pii = Policy(config)  # personal data: redacted, refused or restored (services/ingress/pii.py)
        # None unless the request log is enabled: then a record of every model request goes to the bus.
        self.request_log = RequestLog(config, lambda: self.connection, self.pii) if config.request_log.enabled else None
        cache = config.cache
        self.l1 = L1Cache(cache.l1_max_bytes, cache.l1_max_entries) if cache.enabled and cache.ingress_l1 else None
        # Without L2 the cache service knows nothing this ingress's L1 does not (both hear every fill).
        self.ask_cache_service = cache.enabled and (
            self.l1 is None or (cache.redis_url is not None and cache.l2_enabled))
        # Models with a semantic cache: a local miss of a request that may match a similar one asks the cache
        # service, which embeds and compares; its wait is the embedding's longer.
        self.semantic = semantic.settings_by_model(config)
        self._responses: ResponseStore | None = None

    def responses(self) -> ResponseStore:
        """The Responses API's shared store, on the bus connection (known once the app has started)."""
        if self._responses is None:
            retention = self.config.responses
            self._responses = ResponseStore(Bucket(self.bus(), self.subjects.responses_bucket,
                                                   retention.retention_seconds, retention.storage))
        return self._responses

    def warn_if_bus_smaller(self, connection: bus.Bus) -> None:
        """A bus that carries less than the body limit: such bodies will get a 413 (not a 500); say why once."""
        if (limit := self.config.ingress.max_body_bytes) + _HEADER_ROOM_BYTES > connection.max_payload:
            log.warning("ingress.max_body_bytes is %d but the NATS server's max_payload is %d: larger requests "
                        "get a 413; raise max_payload (deploy/nats/nats.conf)", limit, connection.max_payload)

    def check_fits(self, payload: bytes) -> None:
        """413 for a request the bus cannot carry as one message: the server's max_payload (48 MB as we
        ship it, deploy/nats/nats.conf) is the real limit when it is smaller than ingress.max_body_bytes,
        or when the encoded request outgrew its JSON (msgpack writes every float in 9 bytes)."""
        room = self.bus().max_payload - _HEADER_ROOM_BYTES
        if len(payload) > room:
            raise BodyTooLarge(f"Request is larger than the {room} bytes the gateway's message bus carries.")

    async def listen_for_fills(self, connection: bus.Bus) -> None:
        """Fill the ingress's L1 from the broadcast every cache replica hears."""
        if self.l1 is None:
            return
        l1, ttl = self.l1, self.config.cache.ttl_seconds

        async def fill(data: bytes, headers: Mapping[str, str]) -> None:
            if key := headers.get(Headers.CACHE_KEY):
                l1.put(key, data, fill_ttl(headers, ttl))

        async def fill_vectors(data: bytes, headers: Mapping[str, str]) -> None:
            fill = vector_fill_decoder.decode(data)  # embeddings: each input's vector under its own key
            for key, vector in zip(fill.keys, fill.vectors, strict=False):
                l1.put(key, vector, fill_ttl(headers, ttl))

        await connection.listen(self.subjects.cache_fill, fill)
        await connection.listen(self.subjects.vector_fill, fill_vectors)

    def bus(self) -> bus.Bus:
        if self.connection is None or not self.connection.connected:
            raise Unavailable("the message bus is not connected", code="bus_unavailable")
        return self.connection

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
        if (ttl := request.headers.get("x-llm-edge-cache-ttl")) is not None:
            headers[Headers.CACHE_TTL] = str(cache_ttl(ttl))
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

    async def authenticate(self, request: Request) -> Grant | None:
        """The caller's key (401 without a valid one); None when the gateway has no keys (open)."""
        if self.keyring is None:
            return None
        key_name.set(None)  # a keep-alive connection's next request must not log the last one's key
        grant = await self.keyring.find(request.headers)
        call = Call.of(request)
        call.key, call.tenant = grant.name, grant.namespace
        key_name.set(grant.name)
        return grant

    async def admit(self, request: Request, grant: Grant, model: str) -> str:
        """The model check (403) and the key's limits (429), then the cache namespace to use.

        Every model-serving endpoint calls `authenticate` first and this once it knows the model."""
        assert self.keyring is not None
        call = Call.of(request)
        try:
            snap = await self.keyring.admit(grant, model)
        except Refused as refused:
            call.limit_headers = limits.headers(grant.rule, refused.snap)
            if refused.snap.denied == "budget":  # waiting seconds will not help: tell SDKs not to retry
                call.limit_headers["x-should-retry"] = "false"
            raise refused.error from None
        if snap is not None:
            call.limit_headers = limits.headers(grant.rule, snap)
        return grant.namespace

    def stream_charger(self, grant: Grant | None, model: str) -> Callable[[StreamEnd], None]:
        """What a stream calls with its end frame: the usage and cost it reports are charged."""
        return lambda end: self.charge(grant, model, end.usage, end.cost_usd)

    def charge(self, grant: Grant | None, model: str, usage: Usage | None, cost: float) -> None:
        """Count an answer from a provider (cache hits cost nothing): its spend, and its real tokens and cost
        against its key's limits; never delays the response."""
        if grant is None:
            self.spend.record("", "default", model, usage, cost)
            return
        self.spend.record(grant.name, grant.namespace, model, usage, cost)
        if grant.rule.limited and self.keyring is not None:
            self.keyring.limiter.charge(grant.rule, usage.total_tokens if usage is not None else 0, cost)


async def lookup(
    gateway: Gateway, chat: ChatRequest, payload: bytes, headers: dict[str, str], timeout: float
) -> tuple[ChatResult | None, str | None]:
    """The cache: first this ingress's own L1 (no bus crossing), then, when it can know more (L2), the
    cache service: a hit is one round trip; a miss says under which key the router stores the answer.

    The ingress asks each tier itself instead of letting the cache forward the miss: NATS reports "no
    responders" only to the publisher of a request, so a forwarded miss with no router running would be
    dropped silently and the client would wait for its deadline.
    """
    control = headers.get(Headers.CACHE_CONTROL, "")
    if not gateway.config.cache.enabled or ("no-cache" in control and "no-store" in control):
        return None, None  # nothing to read and nothing to store: the cache tier cannot help
    asking = headers
    settings = gateway.semantic.get(chat.model) if gateway.semantic else None
    semantic_wait = settings.timeout_seconds if settings is not None and semantic.eligible(chat, settings) else 0.0
    if gateway.l1 is not None:
        key = cache_key(chat, headers.get(Headers.NAMESPACE, "default"))
        if "no-cache" not in control and (value := gateway.l1.get(key)) is not None:
            hit = reply_decoder.decode(value)
            if isinstance(hit, ChatResult):
                log.debug("cache hit (ingress l1)")
                _L1.hit()
                return hit, "l1"
        if not gateway.ask_cache_service and not semantic_wait:
            log.debug("cache miss (ingress l1; no l2 to ask)")
            _L1.miss()
            if "no-store" not in control:
                headers[Headers.CACHE_KEY] = key
            return None, None
        asking = {**headers, Headers.CACHE_KEY: key}  # the cache service need not compute it again
    wait = min(gateway.config.cache.lookup_timeout_seconds + semantic_wait, timeout)
    try:
        reply, answer = await gateway.bus().request(gateway.subjects.cache_lookup, payload, asking, wait)
    except (bus.NoResponders, DeadlineExceeded):
        return None, None  # the cache is optional: no instance, or too slow, means a miss
    match reply:
        case ChatResult():
            tier = answer.headers.get(Headers.CACHE_TIER)
            if tier == "semantic":
                return reply, SemanticTier(answer.headers.get(Headers.CACHE_SIMILARITY, ""))
            return reply, tier
        case CacheMiss(key=key):
            if "no-store" not in control:
                headers[Headers.CACHE_KEY] = key
    return None, None


_L1 = metrics.Lookup("l1")


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`, unless the client hangs up first: then `work` is cancelled and `ClientDisconnect` raised, so
    nothing keeps waiting for an answer nobody will read. Only once the body has been read.

    `work` runs in the request's own task, which the connection's `Departure` cancels when the client
    leaves (a watcher task waiting in `receive()` cost the ingress ~9 µs a request more, and a task for
    `work` with `asyncio.wait` over both ~25 µs, py-spy at c=64). Served by another ASGI server (no
    `Departure`), a watcher task does it."""
    current = asyncio.current_task()
    assert current is not None
    left = False

    def leave() -> None:
        nonlocal left
        left = True
        current.cancel()

    departure: Departure | None = request.scope.get(DEPARTURE)
    watcher = None
    if departure is None:
        watcher = asyncio.get_running_loop().create_task(_watch(request, leave))
    elif not departure.watch(leave):
        if inspect.iscoroutine(work):
            work.close()  # never awaited: no "never awaited" warning
        raise ClientDisconnect()
    try:
        return await work
    except asyncio.CancelledError:
        if left and current.uncancel() == 0:  # cancelled for the client alone, not by a shutdown too
            raise ClientDisconnect() from None
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        elif departure is not None:
            departure.unwatch()


async def _watch(request: Request, leave: Callable[[], None]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    leave()


async def route(gateway: Gateway, payload: bytes, headers: dict[str, str], deadline: float,
                subject: str | None = None) -> Reply:
    """Ask a router for the answer (on `subject`: chat's `route` unless given, e.g. `embed`). A router that
    dies while it holds the request goes silent (no heartbeats): the request goes to another router once,
    rather than waiting for the deadline. When the wait is cancelled (the client left), the bus's cancel
    notice closes the worker's upstream call."""
    for attempt in (1, 2):
        try:
            reply, _ = await gateway.bus().request(
                subject or gateway.subjects.route, payload, headers,
                deadline + _REPLY_GRACE_SECONDS - time.monotonic(), gateway.heartbeat,
                cancel=gateway.subjects.cancel,  # a client that leaves closes the upstream call
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
    gateway: Gateway, request: Request, payload: bytes, headers: dict[str, str], rid: str, deadline: float,
    writer: Callable[[StreamChunk], stream.Writer], on_end: Callable[[StreamEnd], None] | None = None,
) -> Response:
    headers[Headers.STREAM] = "1"
    for attempt in (1, 2):
        bus_stream = await gateway.bus().open_stream(gateway.subjects.route, payload, headers,
                                                     gateway.subjects.cancel, gateway.heartbeat)
        try:
            # A client that leaves before the first chunk is noticed now, not when that chunk arrives;
            # closing the stream sends the cancel notice that closes the upstream call.
            first = await unless_client_leaves(request, stream.first_frame(bus_stream, deadline + _REPLY_GRACE_SECONDS))
        except Unavailable as exc:
            # Silence before the first chunk: the router holding the stream died (a worker's death is the
            # router's to retry, and it keeps beating meanwhile). Nothing reached the client yet, so the
            # stream goes to another router once, as a plain request does; the old one's cancel notice
            # closes whatever call it had started.
            await bus_stream.close()
            if exc.code != "stream_lost" or attempt == 2:
                raise
            log.warning("the router handling a stream went silent before its first chunk; asking another")
            continue
        except BaseException:
            await bus_stream.close()
            raise
        break
    idle = gateway.config.ingress.stream_idle_timeout_seconds
    frames = stream.relay(bus_stream, first, writer(first), idle, deadline + _REPLY_GRACE_SECONDS, on_end)
    return sse_response(frames, rid, first.provider or "", None)
