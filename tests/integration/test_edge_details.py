"""The smaller edge defects of issue #15 (item 10): `/health` tells the truth about breakers and the
rate-limit Redis; `x-llm-edge-cache-ttl` is validated; a cache hit costs nothing."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from llm_edge.launcher import free_port
from tests.infra import Nats, Server
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

NO_CACHE = {"cache-control": "no-cache, no-store"}


def chat(content: str, model: str = "pair") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


@pytest.fixture
async def second() -> AsyncIterator[MockUpstream]:
    server = MockUpstream()
    await server.start()
    yield server
    await server.stop()


async def test_health_follows_the_breakers(nats_server: Nats, upstream: MockUpstream, second: MockUpstream) -> None:
    stack = await Stack(make_config(
        nats_server.url,
        providers={"a": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
                   "b": {"adapter": "openai_compatible", "base_url": f"{second.url}/v1", "api_key": "k"}},
        models=[{"name": "pair", "targets": [{"provider": "a", "model": "gpt-4o"},
                                             {"provider": "b", "model": "gpt-4o-mini"}]}],
        router={"retry": {"attempts": 1}, "breaker": {"consecutive_failures": 1, "cooldown_seconds": 60}},
    )).start()
    try:
        assert stack.http is not None
        assert (await stack.http.get("/health")).json()["status"] == "healthy"
        upstream.script([{"status": 500}] * 10)
        a_fails = await stack.http.post("/v1/chat/completions", json=chat("a fails"), headers=NO_CACHE)
        assert a_fails.status_code == 200  # b answered
        one_open = await stack.http.get("/health")
        assert (one_open.status_code, one_open.json()["status"]) == (200, "degraded")
        assert one_open.json()["router"]["checks"] == {"breaker a/gpt-4o": "open"}
        second.script([{"status": 500}] * 10)
        b_fails = await stack.http.post("/v1/chat/completions", json=chat("b fails"), headers=NO_CACHE)
        assert b_fails.status_code == 502
        all_open = await stack.http.get("/health")
        assert (all_open.status_code, all_open.json()["status"]) == (503, "unhealthy")
        assert all_open.json()["router"]["status"] == "down"
    finally:
        await stack.close()


async def test_health_reports_the_rate_limit_redis(nats_server: Nats, redis_server: Server) -> None:
    keys = [{"name": "alpha", "sha256": hashlib.sha256(b"sk-alpha-0123456789").hexdigest(), "rpm": 100}]
    up = await Stack(make_config(nats_server.url, keys=keys, limits={"redis_url": redis_server.url})).start()
    gone = await Stack(make_config(nats_server.url, keys=keys, limits={
        "redis_url": f"redis://127.0.0.1:{free_port()}/0"})).start()  # nothing listens there
    try:
        assert up.http is not None and gone.http is not None
        healthy = (await up.http.get("/health")).json()
        assert (healthy["status"], healthy["limits"]["status"]) == ("healthy", "up")
        degraded = await gone.http.get("/health")
        assert degraded.status_code == 200  # still serving, with limits per process
        assert (degraded.json()["status"], degraded.json()["limits"]["status"]) == ("degraded", "down")
    finally:
        await up.close()
        await gone.close()


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url)).start()
    yield stack
    await stack.close()


@pytest.mark.parametrize("ttl", ["abc", "nan", "inf", "-inf", "1e30", "0", "-5", "", "0.0000001"])
async def test_a_bad_cache_ttl_is_a_400(stack: Stack, ttl: str) -> None:
    assert stack.http is not None
    response = await stack.http.post("/v1/chat/completions", json=chat("ttl", "mock"),
                                     headers={"x-llm-edge-cache-ttl": ttl})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_cache_ttl"


async def test_a_good_cache_ttl_is_kept(stack: Stack) -> None:
    assert stack.http is not None
    body = chat("short-lived", "mock")
    response = await stack.http.post("/v1/chat/completions", json=body, headers={"x-llm-edge-cache-ttl": "30"})
    assert response.status_code == 200
    l1 = stack.caches["cache"].l1
    await eventually(lambda: len(l1) >= 1)


async def test_a_cache_hit_costs_nothing(nats_server: Nats, upstream: MockUpstream) -> None:
    stack = await Stack(make_config(nats_server.url, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}})).start()
    try:
        assert stack.http is not None
        body = chat("what does it cost", "up/gpt-4o-mini")
        miss = await stack.http.post("/v1/chat/completions", json=body)
        assert miss.headers["x-llm-edge-cache"] == "miss" and float(miss.headers["x-llm-edge-cost-usd"]) > 0
        await eventually(lambda: len(stack.apps[0].gateway.l1 or ()) == 1)
        hit = await stack.http.post("/v1/chat/completions", json=body)
        assert hit.headers["x-llm-edge-cache"] == "hit-l1"
        assert hit.headers["x-llm-edge-cost-usd"] == "0.00000000"
    finally:
        await stack.close()
