"""The cache service's embedding vectors, by calling its handlers: L1 from the fill broadcast, L2 in a real
Redis (a replica that never heard the fill finds the vectors there and keeps them in its L1)."""

from __future__ import annotations

from services.cache.service import CacheService
from services.cache.vectors import VectorCache
from shared import bus
from shared.cache import vectors
from shared.config import Config
from shared.messages import EmbeddingRequest, VectorFill, VectorHits, VectorLookup, encode
from tests.stack import make_config

REQUEST = EmbeddingRequest(model="embed", input=["a", "b", "c"])


def cache(config: Config | None = None) -> tuple[CacheService, VectorCache]:
    service = CacheService(config or make_config("nats://unused"))
    return service, VectorCache(service)


async def test_a_fill_makes_hits_per_input_and_misses_stay_none() -> None:
    _, handler = cache()
    scope = vectors.scope(REQUEST, "tenant-a")
    keys = vectors.keys(scope, REQUEST.input)
    await handler.fill_l1(encode(VectorFill(keys=keys[:2], vectors=[b"AAAA", b"BBBB"])), {})
    hits = await handler.lookup(VectorLookup(keys=keys), bus.Context(b"", {}))
    assert hits == VectorHits(vectors=[b"AAAA", b"BBBB", None])
    other = vectors.keys(vectors.scope(REQUEST, "tenant-b"), REQUEST.input)
    assert await handler.lookup(VectorLookup(keys=other), bus.Context(b"", {})) == VectorHits(vectors=[None] * 3)


async def test_l2_serves_a_replica_that_never_heard_the_fill(redis_url: str) -> None:
    config = make_config("nats://unused", cache={"redis_url": redis_url})  # replicas of one deployment
    writer_service, writer = cache(config)
    reader_service, reader = cache(config)
    try:
        keys = vectors.keys(vectors.scope(REQUEST, "t"), REQUEST.input)
        await writer.fill_l2(encode(VectorFill(keys=keys[1:], vectors=[b"BBBB", b"CCCC"])), {})
        hits = await reader.lookup(VectorLookup(keys=keys), bus.Context(b"", {}))
        assert hits == VectorHits(vectors=[None, b"BBBB", b"CCCC"])
        assert reader_service.l1.get(keys[2]) == b"CCCC"  # kept in L1 for the next lookup
    finally:
        await writer_service.close()
        await reader_service.close()
