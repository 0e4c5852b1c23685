"""The whole non-streaming request path over a real nats-server (and Redis), with a mock upstream that
speaks OpenAI's wire format: caching tiers, failover, missing services, and what the client sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import openai
import pytest
import redis.asyncio as redis

from tests.infra import Nats, Server
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

# These tests are about the request path: each upstream answer reaches the client as it is.
NO_RETRIES = {"retry": {"attempts": 1}}
CHAT = {"model": "gpt-mock", "messages": [{"role": "user", "content": "What is NATS?"}]}


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 3.0) -> None:
    """Wait for a condition the system reaches asynchronously (a cache fill), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


def upstream_providers(upstream: MockUpstream) -> dict[str, dict[str, object]]:
    return {
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "sk-upstream"},
        "mock": {},
    }


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(
        nats_server.url,
        providers=upstream_providers(upstream),
        models=[{"name": "gpt-mock", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
        router=NO_RETRIES,
    )
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def test_miss_then_l1_hit_calls_upstream_once(stack: Stack, upstream: MockUpstream) -> None:
    first = await stack.http.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 200, first.text
    assert first.headers["x-llm-edge-cache"] == "miss"
    assert first.headers["x-llm-edge-provider"] == "up"
    assert first.json()["choices"][0]["message"]["content"] == "Echo: What is NATS?"
    assert upstream.stats["last_request"]["model"] == "gpt-4o-mini"
    cache = stack.caches["cache"]
    await eventually(lambda: len(cache.l1) == 1)

    second = await stack.http.post("/v1/chat/completions", json=CHAT)
    assert second.status_code == 200
    assert second.headers["x-llm-edge-cache"] == "hit-l1"
    assert second.json() == first.json()
    assert upstream.stats["calls"] == 1


async def test_no_cache_skips_lookup_and_no_store_skips_fill(stack: Stack, upstream: MockUpstream) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "cache control"}]}
    stored = await stack.http.post("/v1/chat/completions", json=body, headers={"cache-control": "no-store"})
    assert stored.headers["x-llm-edge-cache"] == "miss"
    again = await stack.http.post("/v1/chat/completions", json=body)
    assert again.headers["x-llm-edge-cache"] == "miss"  # the no-store answer was not kept
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)
    fresh = await stack.http.post("/v1/chat/completions", json=body, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-llm-edge-cache"] == "miss"
    assert upstream.stats["calls"] == 3


async def test_stream_and_user_fields_do_not_change_the_cache_key(stack: Stack, upstream: MockUpstream) -> None:
    await stack.http.post("/v1/chat/completions", json={**CHAT, "user": "alice"})
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)
    hit = await stack.http.post("/v1/chat/completions", json={**CHAT, "user": "bob"})
    assert hit.headers["x-llm-edge-cache"] == "hit-l1"
    other = await stack.http.post("/v1/chat/completions", json={**CHAT, "temperature": 0.1})
    assert other.headers["x-llm-edge-cache"] == "miss"
    assert upstream.stats["calls"] == 2


async def test_openai_sdk_gets_a_valid_completion_with_usage(stack: Stack) -> None:
    completion = await stack.openai().chat.completions.create(
        model="gpt-mock", messages=[{"role": "user", "content": "hello there"}]
    )
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_fresh_cache_process_answers_from_l2(
    nats_server: Nats, upstream: MockUpstream, redis_url: str
) -> None:
    # The ingress's own L1 off: this is about the cache service reading Redis.
    config = make_config(
        nats_server.url, providers=upstream_providers(upstream), cache={"redis_url": redis_url, "ingress_l1": False}
    )
    stack = await Stack(config).start()
    try:
        body = {**CHAT, "model": "up/gpt-4o-mini"}
        first = await stack.http.post("/v1/chat/completions", json=body)
        assert first.headers["x-llm-edge-cache"] == "miss"
        client = redis.Redis.from_url(redis_url)
        async def stored() -> bool:
            return bool(await client.dbsize())

        await eventually(stored)
        await client.aclose()

        await stack.stop_service("cache")
        await stack.start_cache("fresh")
        second = await stack.http.post("/v1/chat/completions", json=body)
        assert second.headers["x-llm-edge-cache"] == "hit-l2"
        assert second.json()["choices"] == first.json()["choices"]
        assert len(stack.caches["fresh"].l1) == 1  # the L2 hit filled L1
        assert upstream.stats["calls"] == 1
    finally:
        await stack.close()


async def test_failover_to_the_second_target(nats_server: Nats, upstream: MockUpstream) -> None:
    providers = upstream_providers(upstream) | {"broken": {"adapter": "mock", "fail_rate": 1.0}}
    config = make_config(
        nats_server.url,
        providers=providers,
        models=[{"name": "resilient", "targets": [
            {"provider": "broken", "model": "m"}, {"provider": "up", "model": "gpt-4o"}]}],
        router=NO_RETRIES,
    )
    stack = await Stack(config).start()
    try:
        upstream.script([{"status": 503}])
        response = await stack.http.post("/v1/chat/completions", json={**CHAT, "model": "resilient"})
        assert response.status_code == 503  # broken (500), then up (scripted 503): the last error shows
        response = await stack.http.post("/v1/chat/completions", json={**CHAT, "model": "resilient"})
        assert response.status_code == 200
        assert response.headers["x-llm-edge-provider"] == "up"
        assert response.headers["x-llm-edge-model"] == "gpt-4o"
    finally:
        await stack.close()


async def test_requests_are_answered_without_the_cache_tier(stack: Stack) -> None:
    await stack.stop_service("cache")
    response = await stack.http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-llm-edge-cache"] == "miss"
    health = (await stack.http.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["cache"]["status"] == "down"


async def test_redis_down_still_answers_and_health_is_degraded(
    nats_server: Nats, upstream: MockUpstream, redis_server: Server, redis_url: str
) -> None:
    config = make_config(nats_server.url, providers=upstream_providers(upstream), cache={"redis_url": redis_url})
    stack = await Stack(config).start()
    try:
        healthy = await stack.http.get("/health")
        assert healthy.json()["status"] == "healthy"
        assert healthy.json()["cache"]["checks"]["l2"] == "up"
        redis_server.stop()
        response = await stack.http.post("/v1/chat/completions", json={**CHAT, "model": "up/x"})
        assert response.status_code == 200
        health = await stack.http.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["cache"]["checks"]["l2"] == "down"
    finally:
        await stack.close()
        redis_server.start()


async def test_no_provider_worker_is_503_at_once(nats_server: Nats) -> None:
    stack = await Stack(make_config(nats_server.url)).start(providers=False)
    try:
        started = time.monotonic()
        response = await stack.http.post("/v1/chat/completions", json={**CHAT, "model": "mock"})
        assert time.monotonic() - started < 0.5
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_provider_worker"
        health = await stack.http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    finally:
        await stack.close()


async def test_no_router_is_503_at_once(nats_server: Nats) -> None:
    stack = await Stack(make_config(nats_server.url)).start()
    try:
        await stack.stop_service("router")
        started = time.monotonic()
        response = await stack.http.post("/v1/chat/completions", json={**CHAT, "model": "mock"})
        assert time.monotonic() - started < 0.5
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_router"
    finally:
        await stack.close()


async def test_deadline_gives_504(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 200, "delay_ms": 3000}])
    started = time.monotonic()
    response = await stack.http.post(
        "/v1/chat/completions", json=CHAT, headers={"x-llm-edge-timeout": "0.5"}
    )
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert 0.4 < time.monotonic() - started < 1.5


async def test_upstream_rate_limit_reaches_the_client_with_retry_after(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "7"}}])
    with pytest.raises(openai.RateLimitError) as caught:
        await stack.openai().chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "7"
    assert error_body(caught.value)["type"] == "rate_limit_error"


async def test_upstream_auth_failure_is_a_502_not_the_callers_401(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 401}])
    response = await stack.http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_auth_failed"
    assert "sk-upstream" not in response.text


async def test_malformed_upstream_body_is_a_502(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 200, "raw": "not json"}])
    response = await stack.http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_bad_response"


async def test_models_lists_configured_names(stack: Stack) -> None:
    response = await stack.http.get("/v1/models")
    assert response.status_code == 200
    ids = [model["id"] for model in response.json()["data"]]
    assert ids == ["gpt-mock", "mock"]


async def test_health_when_everything_runs(stack: Stack) -> None:
    response = await stack.http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["providers"]["up"]["status"] == "up"
    assert body["cache"]["checks"]["l2"] == "off"
    assert (await stack.http.get("/health/ready")).status_code == 200
    assert (await stack.http.get("/health/live")).status_code == 200


async def test_vendor_extras_reach_an_openai_compatible_upstream(stack: Stack, upstream: MockUpstream) -> None:
    body = {**CHAT, "top_k": 5, "guided_json": {"type": "object"}}
    response = await stack.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    sent = upstream.stats["last_request"]
    assert sent["top_k"] == 5 and sent["guided_json"] == {"type": "object"}
    assert "extra_json" not in sent


async def test_no_cache_and_no_store_together_skip_the_cache_tier(stack: Stack, upstream: MockUpstream) -> None:
    from prometheus_client import REGISTRY

    def lookups() -> float:
        return sum(REGISTRY.get_sample_value("llm_edge_cache_lookups_total", {"tier": "l1", "result": r}) or 0
                   for r in ("hit", "miss"))

    before = lookups()
    response = await stack.http.post("/v1/chat/completions", json=CHAT,
                                     headers={"cache-control": "no-cache, no-store"})
    assert response.status_code == 200 and response.headers["x-llm-edge-cache"] == "miss"
    assert lookups() == before  # not even asked
    assert upstream.stats["calls"] == 1


async def test_the_ingress_answers_a_hit_from_its_own_l1_with_no_cache_service(
    nats_server: Nats, upstream: MockUpstream
) -> None:
    stack = await Stack(make_config(nats_server.url, providers=upstream_providers(upstream))).start()
    try:
        await stack.stop_service("cache")  # no cache instance at all: without L2 it has nothing to add
        body = {**CHAT, "model": "up/gpt-4o-mini"}
        first = await stack.http.post("/v1/chat/completions", json=body)
        assert first.headers["x-llm-edge-cache"] == "miss"
        l1 = stack.apps[0].gateway.l1
        assert l1 is not None
        await eventually(lambda: len(l1) == 1)  # the router's fill broadcast reached the ingress
        second = await stack.http.post("/v1/chat/completions", json=body)
        assert second.headers["x-llm-edge-cache"] == "hit-l1"
        assert second.json()["choices"] == first.json()["choices"]
        assert upstream.stats["calls"] == 1
        fresh = await stack.http.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
        assert fresh.headers["x-llm-edge-cache"] == "miss" and upstream.stats["calls"] == 2
    finally:
        await stack.close()


async def test_with_l2_a_new_ingress_replica_still_finds_earlier_answers(
    nats_server: Nats, upstream: MockUpstream, redis_url: str
) -> None:
    config = make_config(nats_server.url, providers=upstream_providers(upstream), cache={"redis_url": redis_url})
    stack = await Stack(config).start()
    try:
        body = {**CHAT, "model": "up/gpt-4o-mini"}
        first = await stack.http.post("/v1/chat/completions", json=body)
        assert first.headers["x-llm-edge-cache"] == "miss"
        await eventually(lambda: len(stack.caches["cache"].l1) == 1)
        later = await stack.add_ingress()  # started after the fill: its own L1 is empty
        async with httpx.AsyncClient(base_url=later) as client:
            second = await client.post("/v1/chat/completions", json=body)
        assert second.headers["x-llm-edge-cache"] == "hit-l1"  # the cache service's L1 answered
        assert second.json()["choices"] == first.json()["choices"]
        assert upstream.stats["calls"] == 1
    finally:
        await stack.close()
