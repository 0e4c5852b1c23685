"""Cache key derivation and the bounded L1."""

from __future__ import annotations

import msgspec

from shared.cache.key import cache_key
from shared.cache.l1 import L1Cache
from shared.messages import ChatRequest


def request(**fields: object) -> ChatRequest:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return msgspec.convert(base | fields, ChatRequest)


def test_key_ignores_stream_user_and_metadata() -> None:
    plain = cache_key(request(), "t")
    assert cache_key(request(stream=True, user="u", metadata={"a": "b"}), "t") == plain


def test_key_changes_with_anything_that_changes_the_answer() -> None:
    plain = cache_key(request(), "t")
    assert cache_key(request(temperature=0.5), "t") != plain
    assert cache_key(request(model="other"), "t") != plain
    assert cache_key(request(seed=1), "t") != plain
    assert cache_key(request(n=2), "t") != plain
    assert cache_key(request(messages=[{"role": "user", "content": "ho"}]), "t") != plain


def test_key_is_scoped_by_namespace() -> None:
    assert cache_key(request(), "tenant-a") != cache_key(request(), "tenant-b")


def test_key_does_not_depend_on_map_order() -> None:
    a = request(logit_bias={"1": 1.0, "2": -1.0})
    b = request(logit_bias={"2": -1.0, "1": 1.0})
    assert cache_key(a, "t") == cache_key(b, "t")


def test_l1_expires_entries_after_their_ttl() -> None:
    cache = L1Cache(max_bytes=1000, max_entries=10)
    cache.put("k", b"v", ttl=10, now=100.0)
    assert cache.get("k", now=109.9) == b"v"
    assert cache.get("k", now=110.0) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_l1_evicts_least_recently_used_when_over_bytes() -> None:
    cache = L1Cache(max_bytes=25, max_entries=100)
    cache.put("a", b"x" * 9, ttl=60)
    cache.put("b", b"x" * 9, ttl=60)
    assert cache.get("a") is not None  # a is now more recent than b
    cache.put("c", b"x" * 9, ttl=60)
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes <= 25


def test_l1_bounded_in_entries_and_refuses_oversized_values() -> None:
    cache = L1Cache(max_bytes=1000, max_entries=2)
    for key in "abc":
        cache.put(key, b"v", ttl=60)
    assert len(cache) == 2 and cache.get("a") is None
    assert cache.put("huge", b"x" * 2000, ttl=60) is False
    assert cache.get("huge") is None


def test_l1_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache = L1Cache(max_bytes=1000, max_entries=10)
    cache.put("k", b"x" * 100, ttl=60)
    cache.put("k", b"x" * 10, ttl=60)
    assert cache.bytes == 11
