"""The cache service's lookup and fill, by calling its handlers with no nats-server (L1 only; L2 with a
real Redis is covered by the integration tests)."""

from __future__ import annotations

import pytest

from services.cache.service import CacheService
from shared import bus
from shared.cache.key import cache_key
from shared.errors import InvalidRequest
from shared.messages import CacheMiss, ChatRequest, Message, encode
from shared.subjects import Headers
from tests.stack import make_config

REQUEST = ChatRequest(model="mock", messages=[Message(role="user", content="cache me")])
STORED = b"an encoded answer, passed on as bytes"


def service() -> CacheService:
    return CacheService(make_config("nats://unused"))


def asking(namespace: str = "default", **headers: str) -> bus.Context:
    return bus.Context(encode(REQUEST), {Headers.NAMESPACE: namespace, **headers}, reply="_INBOX.x")


async def test_a_miss_names_the_key_the_router_will_fill_and_the_fill_makes_a_hit() -> None:
    cache = service()
    miss = await cache.lookup(encode(REQUEST), asking("tenant-a"))
    assert miss == CacheMiss(key=cache_key(REQUEST, "tenant-a"))
    await cache.fill_l1(STORED, {Headers.CACHE_KEY: miss.key})
    hit = await cache.lookup(encode(REQUEST), asking("tenant-a"))
    assert isinstance(hit, bus.Raw) and hit.data == STORED and hit.headers == {Headers.CACHE_TIER: "l1"}


async def test_tenants_never_read_each_others_answers() -> None:
    cache = service()
    await cache.fill_l1(STORED, {Headers.CACHE_KEY: cache_key(REQUEST, "tenant-a")})
    assert isinstance(await cache.lookup(encode(REQUEST), asking("tenant-b")), CacheMiss)


async def test_no_cache_skips_the_read_but_still_names_the_key() -> None:
    cache = service()
    key = cache_key(REQUEST, "default")
    await cache.fill_l1(STORED, {Headers.CACHE_KEY: key})
    assert await cache.lookup(encode(REQUEST), asking(**{Headers.CACHE_CONTROL: "no-cache"})) == CacheMiss(key=key)


async def test_a_key_computed_by_the_ingress_is_used_without_decoding_the_request() -> None:
    cache = service()
    await cache.fill_l1(STORED, {Headers.CACHE_KEY: "k-from-ingress"})
    hit = await cache.lookup(b"not decoded", bus.Context(b"not decoded", {Headers.CACHE_KEY: "k-from-ingress"}))
    assert isinstance(hit, bus.Raw) and hit.data == STORED


async def test_an_undecodable_request_is_a_400_and_a_fill_without_a_key_is_ignored() -> None:
    cache = service()
    with pytest.raises(InvalidRequest):
        await cache.lookup(b"\xc1", bus.Context(b"\xc1", {}))
    await cache.fill_l1(STORED, {})
    assert len(cache.l1) == 0


async def test_a_fill_expires_after_its_ttl() -> None:
    cache = service()
    key = cache_key(REQUEST, "default")
    await cache.fill_l1(STORED, {Headers.CACHE_KEY: key, Headers.CACHE_TTL: "0"})
    assert isinstance(await cache.lookup(encode(REQUEST), asking()), CacheMiss)
