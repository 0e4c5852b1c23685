"""The cache tier: answers lookups from the ingress. A hit returns the stored answer (one bus round
trip); a miss returns the key under which the router will store the answer. Fills arrive on a broadcast
subject (every replica fills L1) and a queue group (one replica writes L2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import msgspec
from opentelemetry.trace import SpanKind

from services.cache.vectors import VectorCache
from shared import bus, metrics, runtime, tracing
from shared.cache.key import cache_key
from shared.cache.l1 import L1Cache, fill_ttl
from shared.config import Config
from shared.errors import InvalidRequest
from shared.logs import request_id
from shared.messages import CacheMiss, ChatRequest, HealthReport, request_decoder
from shared.subjects import SERVICE_CACHE, Headers, Queues, Subjects

if TYPE_CHECKING:
    from services.cache.l2 import L2Cache
    from services.cache.semantic import SemanticLookups

log = logging.getLogger("llm_edge.cache")

_HIT_L1 = {Headers.CACHE_TIER: "l1"}
_HIT_L2 = {Headers.CACHE_TIER: "l2"}
_L1, _L2 = metrics.Lookup("l1"), metrics.Lookup("l2")


class CacheService:
    def __init__(self, config: Config) -> None:
        settings = config.cache
        self.instance = ""
        self.subjects = Subjects(config.prefix)
        self.ttl = settings.ttl_seconds
        self.l1 = L1Cache(settings.l1_max_bytes, settings.l1_max_entries)
        self.l2: L2Cache | None = None
        if settings.redis_url and settings.l2_enabled:
            from services.cache.l2 import L2Cache  # redis-py costs ~20 MB; only loaded when L2 is on

            self.l2 = L2Cache(settings.redis_url, settings.redis_timeout_seconds, config.prefix)
        self.semantic: SemanticLookups | None = None
        if any(route.semantic_cache is not None for route in config.models):
            from services.cache.semantic import SemanticLookups  # numpy: only loaded when a model opted in

            self.semantic = SemanticLookups(self, config)

    async def start(self, server: bus.Server) -> None:
        self.instance = server.id
        await server.endpoint("lookup", self.subjects.cache_lookup, Queues.CACHE, bus.Endpoint(bus.raw, self.lookup))
        await server.listen(self.subjects.cache_fill, self.fill_l1)
        if self.l2 is not None:
            await server.listen(self.subjects.cache_fill, self.fill_l2, queue=Queues.CACHE_L2_WRITER)
        await VectorCache(self).start(server)
        if self.semantic is not None:
            await self.semantic.start(server)
        await server.health_endpoint(self.subjects.health("cache"), self.health)

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.close()

    async def lookup(self, payload: bytes, ctx: bus.Context) -> bus.Raw | CacheMiss:
        """A hit: the stored answer's bytes, its tier in a header. A miss: the key the router fills."""
        headers = ctx.headers
        request_id.set(ctx.request_id)
        key = headers.get(Headers.CACHE_KEY)  # an ingress with its own L1 computed it already
        request: ChatRequest | None = None
        if key is None or self.semantic is not None:
            try:
                request = request_decoder.decode(payload)
            except msgspec.DecodeError as exc:
                raise InvalidRequest("the request could not be decoded") from exc
            key = key or cache_key(request, headers.get(Headers.NAMESPACE, "default"))
        with tracing.span("cache.lookup", headers, SpanKind.SERVER) as span:
            answer = await self._lookup(key, headers.get(Headers.CACHE_CONTROL, ""), headers)
            if isinstance(answer, CacheMiss) and self.semantic is not None and request is not None:
                answer = await self.semantic.lookup(request, key, headers) or answer
            log.debug("cache %s", "miss" if isinstance(answer, CacheMiss) else "hit")
            if span is not None:
                span.set_attribute("llm_edge.cache", "miss" if isinstance(answer, CacheMiss) else
                                   (answer.headers or {}).get(Headers.CACHE_TIER, ""))
        return answer

    async def _lookup(self, key: str, control: str, headers: Mapping[str, str]) -> bus.Raw | CacheMiss:
        if "no-cache" not in control:
            if (value := self.l1.get(key)) is not None:
                _L1.hit()
                return bus.Raw(value, _HIT_L1)
            _L1.miss()
            if self.l2 is not None:
                if (value := await self.l2.get(key)) is not None:
                    self.l1.put(key, value, fill_ttl(headers, self.ttl))
                    _L2.hit()
                    return bus.Raw(value, _HIT_L2)
                _L2.miss()
        return CacheMiss(key=key)

    async def stored(self, key: str) -> bytes | None:
        """The answer stored under `key`, from L1 or L2 (the semantic cache's way to its match's answer)."""
        if (value := self.l1.get(key)) is not None:
            return value
        if self.l2 is not None and (value := await self.l2.get(key)) is not None:
            self.l1.put(key, value, self.ttl)
            return value
        return None

    async def fill_l1(self, data: bytes, headers: Mapping[str, str]) -> None:
        if key := headers.get(Headers.CACHE_KEY):
            self.l1.put(key, data, fill_ttl(headers, self.ttl))
            if self.semantic is not None:
                await self.semantic.stored(key, headers)

    async def fill_l2(self, data: bytes, headers: Mapping[str, str]) -> None:
        if (key := headers.get(Headers.CACHE_KEY)) and self.l2 is not None:
            await self.l2.put(key, data, fill_ttl(headers, self.ttl))

    async def health(self) -> HealthReport:
        checks = {"l1": "up", "l1_entries": str(len(self.l1)), "l1_bytes": str(self.l1.bytes)}
        if self.semantic is not None:
            checks["semantic_entries"] = str(len(self.semantic.index))
        status: Literal["up", "degraded", "down"] = "up"
        if self.l2 is not None:
            up = await self.l2.ping()
            checks["l2"] = "up" if up else "down"
            status = "up" if up else "degraded"
        else:
            checks["l2"] = "off"
        return HealthReport(service="cache", instance=self.instance, status=status, checks=checks)


async def serve(config: Config, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port, expose=config.metrics_enabled)
    connection = await bus.connect(config.nats_url, SERVICE_CACHE)
    server = bus.Server(connection, SERVICE_CACHE, "0.1.0", "LLM Edge cache: L1 memory + L2 Redis")
    await server.start()
    cache = CacheService(config)
    await cache.start(server)
    log.info("cache ready (l2 %s)", "on" if cache.l2 else "off")
    runtime.notify_ready(runtime.taking_work(connection, stop))
    await stop.wait()
    await server.drain()
    await cache.close()
