"""The cache service's semantic cache: a chat request of an opted-in model that missed the exact cache is
embedded (over the bus: `llm.embed`, answered by the router like any embeddings request) and compared with
the earlier requests of its partition; a close enough one's stored answer is the reply.

A miss remembers the vector under the request's exact key. When the router's fill for that key arrives (the
answer was stored), this replica broadcasts the vector (`cache.fill.semantic`) and every replica, itself
included, indexes it: the index holds keys and vectors, the answers stay in L1/L2 under their exact keys.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from services.cache.semantic_index import SemanticIndex
from shared import bus, metrics
from shared.cache import semantic, vectors
from shared.cache.l1 import fill_ttl
from shared.config import Config, SemanticCache
from shared.errors import DeadlineExceeded
from shared.messages import (
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    ErrorReply,
    SemanticFill,
    encode,
    semantic_fill_decoder,
)
from shared.subjects import Headers

if TYPE_CHECKING:
    from services.cache.service import CacheService

log = logging.getLogger("llm_edge.cache.semantic")

_SEMANTIC = metrics.Lookup("semantic")
_PASSED_ON = (Headers.REQUEST_ID, Headers.TRACEPARENT)
# Misses waiting for their answer to be stored; one whose answer never comes (an error, no-store upstream)
# leaves at its request's deadline, or first when this many wait.
_MAX_PENDING = 10_000
# When the best match's answer has left L1 and L2, the next best is tried, this many times in all.
_MATCH_ATTEMPTS = 3


class SemanticLookups:
    def __init__(self, cache: CacheService, config: Config) -> None:
        self.cache = cache
        self.models = semantic.settings_by_model(config)
        self.index = SemanticIndex(config.cache.semantic_max_entries, config.cache.semantic_max_bytes)
        self._pending: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()  # key -> partition, vector, until
        self._bus: bus.Bus | None = None

    async def start(self, server: bus.Server) -> None:
        self._bus = server.bus
        await server.listen(self.cache.subjects.semantic_fill, self.index_fill)

    async def lookup(self, request: ChatRequest, key: str, headers: Mapping[str, str]) -> bus.Raw | None:
        """The answer of the most similar earlier request (tier `semantic`, its similarity in a header), or
        None. A miss that will be stored (no `no-store`) is remembered, to be indexed once stored."""
        settings = self.models.get(request.model)
        if settings is None or not semantic.eligible(request, settings):
            return None
        control = headers.get(Headers.CACHE_CONTROL, "")
        if "no-cache" in control and "no-store" in control:
            return None  # nothing to read and nothing to remember: not worth an embedding
        namespace = headers.get(Headers.NAMESPACE, "default")
        started = time.perf_counter()
        vector = await self._embed(semantic.embedded_text(request, settings.scope), settings, namespace, headers)
        if vector is None:
            metrics.SEMANTIC_LOOKUP.labels("error").observe(time.perf_counter() - started)
            return None
        partition = semantic.partition(request, namespace, settings)
        if "no-cache" not in control:
            if (hit := await self._match(partition, vector, settings.threshold)) is not None:
                _SEMANTIC.hit()
                metrics.SEMANTIC_LOOKUP.labels("hit").observe(time.perf_counter() - started)
                return hit
            _SEMANTIC.miss()
        metrics.SEMANTIC_LOOKUP.labels("miss").observe(time.perf_counter() - started)
        if "no-store" not in control:
            self._remember(key, partition, vector, bus.remaining(bus.deadline_from(headers), self.cache.ttl))
        return None

    async def _match(self, partition: str, vector: bytes, threshold: float) -> bus.Raw | None:
        query = np.frombuffer(vector, dtype="<f4")
        for _ in range(_MATCH_ATTEMPTS):
            match = await self.index.search_async(partition, query, threshold)
            if match is None:
                return None
            key, similarity = match
            if (answer := await self.cache.stored(key)) is not None:
                return bus.Raw(answer, {Headers.CACHE_TIER: "semantic", Headers.CACHE_SIMILARITY: f"{similarity:.4f}"})
            self.index.remove(key)  # its answer expired or was evicted: the entry is useless now
        return None

    async def _embed(self, text: str, settings: SemanticCache, namespace: str,
                     headers: Mapping[str, str]) -> bytes | None:
        """The text's vector: this replica's vector cache (the tenant's earlier embeddings), else the router.
        A failure or a late answer is a miss, never the request's failure: the cache is optional."""
        request = EmbeddingRequest(model=settings.embedding_model, input=[text],
                                   dimensions=msgspec.UNSET if settings.dimensions is None else settings.dimensions)
        scope = vectors.scope(request, namespace)
        if (stored := self.cache.l1.get(vectors.key(scope, text))) is not None:
            return stored
        if self._bus is None:
            return None
        timeout = settings.timeout_seconds
        asking = {name: headers[name] for name in _PASSED_ON if name in headers}
        # The scope asks the router to broadcast the vector to every cache tier: the same text again (another
        # temperature, say) is not embedded twice.
        asking |= {Headers.NAMESPACE: namespace, Headers.CACHE_KEY: scope,
                   Headers.DEADLINE: str(int((time.time() + timeout) * 1000))}
        try:
            reply, _ = await self._bus.request(self.cache.subjects.embed, encode(request), asking, timeout)
        except (bus.NoResponders, bus.Lost, DeadlineExceeded) as exc:
            log.warning("semantic cache: no embedding from %s (%s); a miss", settings.embedding_model, exc)
            return None
        match reply:
            case EmbeddingResult(vectors=[vector, *_]):
                return vector
            case ErrorReply(status=status, message=message):
                log.warning("semantic cache: embedding with %s failed (%d: %s); a miss",
                            settings.embedding_model, status, message)
            case _:
                log.warning("semantic cache: unexpected embedding reply %s", type(reply).__name__)
        return None

    def _remember(self, key: str, partition: str, vector: bytes, wait: float) -> None:
        now = time.monotonic()
        self._pending[key] = (partition, vector, now + max(wait, 0.0))
        self._pending.move_to_end(key)
        while self._pending:
            oldest, (_, _, until) = next(iter(self._pending.items()))
            if until > now and len(self._pending) <= _MAX_PENDING:
                break
            del self._pending[oldest]

    async def stored(self, key: str, headers: Mapping[str, str]) -> None:
        """The router stored the answer under `key`: if this replica embedded its request, tell every replica."""
        pending = self._pending.pop(key, None)
        if pending is None or self._bus is None:
            return
        partition, vector, _ = pending
        fill = SemanticFill(key=key, partition=partition, vector=vector)
        ttl = {Headers.CACHE_TTL: value} if (value := headers.get(Headers.CACHE_TTL)) else {}
        await self._bus.publish(self.cache.subjects.semantic_fill, encode(fill), ttl)

    async def index_fill(self, data: bytes, headers: Mapping[str, str]) -> None:
        fill = semantic_fill_decoder.decode(data)
        if len(fill.vector) % 4:
            log.warning("semantic cache: a fill's vector is not float32 (%d bytes); ignored", len(fill.vector))
            return
        self.index.add(fill.partition, fill.key, np.frombuffer(fill.vector, dtype="<f4"),
                       fill_ttl(headers, self.cache.ttl))
