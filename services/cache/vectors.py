"""The cache tier's embedding vectors: one entry per input (`shared/cache/vectors.py` makes the keys), in the
same L1 and L2 as the answers. A lookup names every key of a batch and gets each stored vector or None; a
fill (the router's broadcast after a call) stores each vector of the batch under its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared import bus, metrics
from shared.cache.l1 import fill_ttl
from shared.messages import VectorHits, VectorLookup, vector_fill_decoder, vector_lookup_decoder
from shared.subjects import Queues

if TYPE_CHECKING:
    from services.cache.service import CacheService

_L1, _L2 = metrics.Lookup("l1"), metrics.Lookup("l2")


class VectorCache:
    def __init__(self, cache: CacheService) -> None:
        self.cache = cache

    async def start(self, server: bus.Server) -> None:
        subjects = self.cache.subjects
        await server.endpoint("vectors", subjects.vector_lookup, Queues.CACHE,
                              bus.Endpoint(vector_lookup_decoder.decode, self.lookup))
        await server.listen(subjects.vector_fill, self.fill_l1)
        if self.cache.l2 is not None:
            await server.listen(subjects.vector_fill, self.fill_l2, queue=Queues.CACHE_L2_WRITER)

    async def lookup(self, request: VectorLookup, ctx: bus.Context) -> VectorHits:
        l1, l2 = self.cache.l1, self.cache.l2
        found: list[bytes | None] = [l1.get(key) for key in request.keys]
        missing = [i for i, vector in enumerate(found) if vector is None]
        _L1.hits(len(found) - len(missing))
        _L1.misses(len(missing))
        if missing and l2 is not None:
            values = await l2.get_many([request.keys[i] for i in missing])
            ttl = fill_ttl(ctx.headers, self.cache.ttl)
            for i, value in zip(missing, values, strict=True):
                if value is not None:
                    found[i] = value
                    l1.put(request.keys[i], value, ttl)
            stored = sum(value is not None for value in values)
            _L2.hits(stored)
            _L2.misses(len(values) - stored)
        return VectorHits(vectors=found)

    async def fill_l1(self, data: bytes, headers: Mapping[str, str]) -> None:
        fill = vector_fill_decoder.decode(data)
        ttl = fill_ttl(headers, self.cache.ttl)
        for key, vector in zip(fill.keys, fill.vectors, strict=False):
            self.cache.l1.put(key, vector, ttl)

    async def fill_l2(self, data: bytes, headers: Mapping[str, str]) -> None:
        if self.cache.l2 is None:
            return
        fill = vector_fill_decoder.decode(data)
        await self.cache.l2.put_many(list(zip(fill.keys, fill.vectors, strict=False)),
                                     fill_ttl(headers, self.cache.ttl))

