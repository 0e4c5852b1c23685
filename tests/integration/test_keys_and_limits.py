"""API keys, per-key limits and budgets at the ingress, as a client sees them through the official
`openai` SDK: 401/403/429 in OpenAI's shapes, rate-limit headers, limits shared by two ingress replicas
through a real Redis (and per replica without it), usage charged after the answer, tenants' caches apart.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from tests.infra import Nats, Server
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

ALPHA, BETA, GAMMA = "sk-alpha-0123456789", "sk-beta-0123456789", "sk-gamma-0123456789"
PROMPT = [{"role": "user", "content": "What is NATS?"}]


def key(name: str, secret: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), **fields}


async def started(nats_url: str, keys: list[dict[str, Any]], **fields: Any) -> Stack:
    return await Stack(make_config(nats_url, keys=keys, **fields)).start()


@pytest.fixture
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    stack = await started(nats_server.url, [key("alpha", ALPHA), key("beta", BETA, models=["mock"])])
    yield stack
    await stack.close()


async def ask(client: openai.AsyncOpenAI, model: str = "mock", content: str = "What is NATS?") -> Any:
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )


def refusals(limit: str) -> float:
    return REGISTRY.get_sample_value("llm_edge_rate_limited_total", {"key": "alpha", "limit": limit}) or 0.0


async def outcomes(calls: list[Any]) -> tuple[list[Any], list[openai.RateLimitError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) + len(limited) == len(results), [r for r in results if isinstance(r, BaseException)]
    return ok, limited


async def test_a_missing_or_wrong_key_is_401_and_never_echoed(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await ask(stack.openai("sk-not-a-configured-key"))
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert "sk-not-a-configured-key" not in caught.value.response.text

    missing = await stack.http.post("/v1/chat/completions", json={"model": "mock", "messages": PROMPT})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert (await stack.http.get("/v1/models")).status_code == 401
    assert (await stack.http.get("/health/live")).status_code == 200  # probes and scrapes stay open
    assert (await stack.http.get("/metrics")).status_code == 200


async def test_bearer_and_x_api_key_are_both_accepted(stack: Stack) -> None:
    completion = (await ask(stack.openai(ALPHA))).parse()
    assert completion.choices[0].message.content == "Mock reply to: What is NATS?"
    response = await stack.http.post(
        "/v1/chat/completions", json={"model": "mock", "messages": PROMPT}, headers={"x-api-key": BETA}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: What is NATS?"


async def test_a_model_outside_the_keys_list_is_403(stack: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await ask(stack.openai(BETA), model="mock/other")
    assert caught.value.code == "model_not_allowed"
    assert (await ask(stack.openai(ALPHA), model="mock/other")).parse().choices
    listed = await stack.openai(BETA).models.list()
    assert [m.id for m in listed.data] == ["mock"]


async def test_rpm_admits_exactly_the_limit_of_concurrent_requests(nats_server: Nats) -> None:
    stack = await started(nats_server.url, [key("alpha", ALPHA, rpm=3)])
    try:
        client = stack.openai(ALPHA)
        before = refusals("requests")
        ok, limited = await outcomes([ask(client, content=f"q{i}") for i in range(7)])
        assert len(ok) == 3 and len(limited) == 4
        refused = limited[0]
        assert refused.code == "rate_limit_exceeded"
        assert error_body(refused)["type"] == "requests"
        assert 1 <= int(refused.response.headers["retry-after"]) <= 20  # one request every 60/3 s
        assert refused.response.headers["x-ratelimit-limit-requests"] == "3"
        assert refused.response.headers["x-ratelimit-remaining-requests"] == "0"
        remaining = sorted(r.headers["x-ratelimit-remaining-requests"] for r in ok)
        assert remaining == ["0", "1", "2"]
        assert all(r.headers["x-ratelimit-reset-requests"].endswith("s") for r in ok)
        assert refusals("requests") == before + 4
    finally:
        await stack.close()


async def test_the_limit_holds_across_two_ingress_replicas_sharing_redis(
    nats_server: Nats, redis_url: str
) -> None:
    # A generous Redis timeout: this is about sharing the count, and on a loaded machine a first call (connect
    # and script load) over the 0.25 s default makes each replica fall back to counting on its own.
    stack = await started(nats_server.url, [key("alpha", ALPHA, rpm=4)],
                          limits={"redis_url": redis_url, "redis_timeout_seconds": 5})
    try:
        other = await stack.add_ingress()
        clients = [stack.openai(ALPHA), stack.openai(ALPHA, url=other)]
        ok, limited = await outcomes([ask(clients[i % 2], content=f"q{i}") for i in range(10)])
        assert len(ok) == 4 and len(limited) == 6
    finally:
        await stack.close()


async def test_without_redis_each_replica_enforces_its_own_limit(nats_server: Nats) -> None:
    stack = await started(nats_server.url, [key("alpha", ALPHA, rpm=2)])
    try:
        other = await stack.add_ingress()
        for url in (stack.url, other):
            client = stack.openai(ALPHA, url=url)
            ok, limited = await outcomes([ask(client, content=f"q{i}") for i in range(3)])
            assert len(ok) == 2 and len(limited) == 1
    finally:
        await stack.close()


@pytest.mark.parametrize("shared", [False, True], ids=["per-process", "redis"])
async def test_tpm_is_charged_with_the_real_usage_of_streamed_and_plain_answers(
    nats_server: Nats, redis_url: str, shared: bool
) -> None:
    # An hour's window: what drains during the test stays far below one token, so counts are exact.
    limits: dict[str, Any] = {"window_seconds": 3600} | ({"redis_url": redis_url} if shared else {})
    stack = await started(nats_server.url, [key("alpha", ALPHA, tpm=100)], limits=limits)
    try:
        client = stack.openai(ALPHA)
        first = await ask(client, content="one two three")
        used = first.parse().usage.total_tokens
        assert used > 0 and first.headers["x-ratelimit-remaining-tokens"] == "100"  # charged after
        await stack.settle()
        chunks = [c async for c in await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "four five six"}],
            stream=True, stream_options={"include_usage": True})]
        last = chunks[-1].usage
        assert last is not None
        streamed = last.total_tokens
        assert streamed > 0 and used + streamed < 100
        await stack.settle()
        third = await ask(client, content=" ".join(["word"] * 50))
        assert third.headers["x-ratelimit-remaining-tokens"] == str(100 - used - streamed)
        assert used + streamed + third.parse().usage.total_tokens >= 100
        await stack.settle()  # now past 100 tokens: the next request is refused before any call
        with pytest.raises(openai.RateLimitError) as caught:
            await ask(client, content="sixteen")
        assert error_body(caught.value)["type"] == "tokens"
        assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(caught.value.response.headers["retry-after"]) >= 1
    finally:
        await stack.close()


@pytest.mark.parametrize("shared", [False, True], ids=["per-process", "redis"])
async def test_a_spent_budget_is_429_insufficient_quota(
    nats_server: Nats, redis_url: str, shared: bool
) -> None:
    limits = {"redis_url": redis_url} if shared else {}
    stack = await started(nats_server.url, [key("alpha", ALPHA, budget_usd=0.000001)], limits=limits)
    try:
        client = stack.openai(ALPHA)
        long = " ".join(["word"] * 100)
        first = await ask(client, model="mock/gpt-4o", content=long)
        assert float(first.headers["x-llm-edge-cost-usd"]) > 0.000001
        await stack.settle()
        before = refusals("budget")
        with pytest.raises(openai.RateLimitError) as caught:
            await ask(client, model="mock/gpt-4o", content="and again")
        assert caught.value.code == "insufficient_quota"
        assert error_body(caught.value)["type"] == "insufficient_quota"
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert refusals("budget") == before + 1
    finally:
        await stack.close()


async def test_tenants_never_share_cached_answers(nats_server: Nats) -> None:
    keys = [key("alpha", ALPHA, tenant="acme"), key("beta", BETA), key("gamma", GAMMA, tenant="acme")]
    stack = await started(nats_server.url, keys)
    try:
        cache = stack.caches["cache"]
        first = await ask(stack.openai(ALPHA))
        assert first.headers["x-llm-edge-cache"] == "miss"
        await eventually(lambda: len(cache.l1) == 1)
        other_tenant = await ask(stack.openai(BETA))
        assert other_tenant.headers["x-llm-edge-cache"] == "miss"
        await eventually(lambda: len(cache.l1) == 2)
        same_tenant = await ask(stack.openai(GAMMA))
        assert same_tenant.headers["x-llm-edge-cache"] == "hit-l1"
        assert (await ask(stack.openai(ALPHA))).headers["x-llm-edge-cache"] == "hit-l1"
    finally:
        await stack.close()


async def test_a_cookie_an_upstream_sets_for_one_tenant_never_reaches_another(nats_server: Nats) -> None:
    """One provider worker serves every tenant through one HTTP session: a `Set-Cookie` in the answer to
    one tenant's call must not ride along on the next tenant's call (an HTTP client's cookie jar would
    send it back)."""
    upstream = MockUpstream()
    await upstream.start()
    stack = await started(nats_server.url, [key("alpha", ALPHA, tenant="acme"), key("beta", BETA)],
                          cache={"enabled": False},
                          providers={"up": {"adapter": "openai_compatible",  # a host name: a cookie jar takes no IP
                                            "base_url": f"{upstream.url.replace('127.0.0.1', 'localhost')}/v1",
                                            "api_key": "k"}})
    try:
        upstream.script([{"headers": {"Set-Cookie": "session=acme-secret; Path=/"}}])
        await ask(stack.openai(ALPHA), model="up/gpt-4o")
        await ask(stack.openai(BETA), model="up/gpt-4o")
        first, second = upstream.requests[-2:]
        assert "cookie" not in first["headers"]
        assert "cookie" not in second["headers"]  # beta's call carries nothing alpha's answer set
    finally:
        await stack.close()
        await upstream.stop()


async def test_redis_stopped_mid_test_falls_back_to_per_process_limits(
    nats_server: Nats, redis_server: Server, redis_url: str
) -> None:
    stack = await started(nats_server.url, [key("alpha", ALPHA, rpm=3)], limits={"redis_url": redis_url})
    fallbacks = REGISTRY.get_sample_value("llm_edge_limiter_fallbacks_total") or 0
    try:
        client = stack.openai(ALPHA)
        assert (await ask(client, content="before")).headers["x-ratelimit-remaining-requests"] == "2"
        redis_server.stop()
        # This replica remembers the request Redis counted: 2 more, then refusals; never a 500 or a hang.
        ok, limited = await outcomes([ask(client, content=f"q{i}") for i in range(4)])
        assert len(ok) == 2 and len(limited) == 2
        assert (REGISTRY.get_sample_value("llm_edge_limiter_fallbacks_total") or 0) > fallbacks
        async with httpx.AsyncClient(base_url=stack.url) as http:
            assert (await http.get("/health/live")).status_code == 200
    finally:
        await stack.close()
        redis_server.start()


async def test_the_anthropic_sdk_authenticates_with_x_api_key_and_is_refused_in_its_own_shape(
    stack: Stack,
) -> None:
    def client(api_key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=stack.url, api_key=api_key, max_retries=0)

    message = await client(BETA).messages.create(
        model="mock", max_tokens=64, messages=[{"role": "user", "content": "What is NATS?"}])
    assert message.content[0].type == "text" and message.content[0].text == "Mock reply to: What is NATS?"
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        await client("sk-not-a-configured-key").messages.create(
            model="mock", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert wrong.value.status_code == 401
    assert error_body(wrong.value)["type"] == "error"
    with pytest.raises(anthropic.PermissionDeniedError):  # beta may only use `mock`
        await client(BETA).messages.create(
            model="mock/other", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
