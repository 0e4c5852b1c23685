"""Routing and resilience with real services and mock upstreams that fail on command: retries honouring
Retry-After, breakers (shared between router replicas), deadlines, strategies, single flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from msgspec.msgpack import decode
from prometheus_client import REGISTRY

from services.router.service import _ModelOnly
from shared import bus
from shared.messages import ChatRequest, ChatResult, Message, encode
from shared.subjects import Headers
from tests.infra import Nats
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


def pair_config(nats_url: str, first: MockUpstream, second: MockUpstream, **router: object) -> object:
    return make_config(
        nats_url,
        providers={
            "a": {"adapter": "openai_compatible", "base_url": f"{first.url}/v1", "api_key": "k"},
            "b": {"adapter": "openai_compatible", "base_url": f"{second.url}/v1", "api_key": "k"},
        },
        models=[{"name": "pair", "targets": [{"provider": "a", "model": "gpt-4o"},
                                             {"provider": "b", "model": "gpt-4o-mini"}]}],
        router={"retry": {"backoff_base_seconds": 0.05},
                "breaker": {"consecutive_failures": 3, "cooldown_seconds": 0.5}} | router,
    )


async def test_429_with_retry_after_is_retried_after_the_delay(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    stack = await Stack(pair_config(nats_server.url, upstream, second)).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 429, "headers": {"retry-after": "1"}}])
        started = time.monotonic()
        response = await stack.http.post("/v1/chat/completions", json=chat("retry me"), headers=NO_CACHE)
        assert response.status_code == 200
        assert response.headers["x-llm-edge-provider"] == "a"  # the same target, after waiting
        assert time.monotonic() - started >= 1.0
        assert upstream.stats["calls"] == 2 and second.stats["calls"] == 0
    finally:
        await stack.close()


async def test_client_errors_are_not_retried(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    stack = await Stack(pair_config(nats_server.url, upstream, second)).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 400}])
        response = await stack.http.post("/v1/chat/completions", json=chat("bad"), headers=NO_CACHE)
        assert response.status_code == 400
        assert upstream.stats["calls"] == 1 and second.stats["calls"] == 0
    finally:
        await stack.close()


async def test_context_window_error_moves_to_a_larger_target(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    config = make_config(
        nats_server.url,
        providers={"small": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1"},
                   "large": {"adapter": "openai_compatible", "base_url": f"{second.url}/v1"}},
        models=[{"name": "pair", "targets": [
            {"provider": "small", "model": "gpt-4o-mini", "context_window": 8000},
            {"provider": "large", "model": "gpt-4.1", "context_window": 1000000}]}],
    )
    stack = await Stack(config).start()
    try:
        upstream.script([{"status": 400, "body": {"error": {
            "message": "This model's maximum context length is 8000 tokens.", "type": "invalid_request_error",
            "param": "messages", "code": "context_length_exceeded"}}}])
        response = await stack.http.post("/v1/chat/completions", json=chat("long " * 50), headers=NO_CACHE)
        assert response.status_code == 200
        assert response.headers["x-llm-edge-provider"] == "large"
    finally:
        await stack.close()


async def test_breaker_opens_moves_traffic_and_a_probe_closes_it(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    stack = await Stack(pair_config(nats_server.url, upstream, second, retry={"attempts": 1})).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 500}] * 1000)  # target a is down
        for i in range(3):
            response = await stack.http.post("/v1/chat/completions", json=chat(f"down {i}"), headers=NO_CACHE)
            assert response.headers["x-llm-edge-provider"] == "b"
        assert upstream.stats["calls"] == 3
        for i in range(10):  # the breaker is open: a is not even tried
            response = await stack.http.post("/v1/chat/completions", json=chat(f"open {i}"), headers=NO_CACHE)
            assert response.headers["x-llm-edge-provider"] == "b"
        assert upstream.stats["calls"] == 3
        assert (await stack.http.get("/health")).json()["router"]["checks"] == {"breaker a/gpt-4o": "open"}

        upstream.reset()  # a recovers; after the cooldown one probe goes to it and closes the breaker
        async def back_on_a() -> bool:
            response = await stack.http.post("/v1/chat/completions", json=chat("probe"), headers=NO_CACHE)
            return response.headers["x-llm-edge-provider"] == "a"

        await eventually(back_on_a, timeout=3)

        # The probe's answer reaches the client straight from the worker, and the router closes the breaker
        # only once the worker's outcome reaches it. Once the router reports it closed, a takes the traffic
        # again. (Without this wait the test once saw b answer a request after the probe, in CI; the cause was
        # not established.)
        async def closed() -> bool:
            checks: dict[str, str] = (await stack.http.get("/health")).json()["router"]["checks"]
            return not checks

        await eventually(closed, timeout=3)
        for i in range(5):
            response = await stack.http.post("/v1/chat/completions", json=chat(f"closed {i}"), headers=NO_CACHE)
            assert response.headers["x-llm-edge-provider"] == "a"
    finally:
        await stack.close()


async def test_a_breaker_opened_by_one_router_replica_is_respected_by_the_other(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    config = pair_config(nats_server.url, upstream, second, retry={"attempts": 1},
                         breaker={"consecutive_failures": 3, "cooldown_seconds": 60})
    stack = await Stack(config).start()  # type: ignore[arg-type]
    try:
        other = await stack.start_router("router-2")
        first = stack.routers["router"]
        target = config.models[0].targets[0]  # type: ignore[attr-defined]
        for _ in range(3):  # three failures seen by the first replica only
            await first._outcome(target, ok=False)
        assert first.breaker(target).state == "open"
        await eventually(lambda: other.breakers.get(target.key) is not None
                         and other.breakers[target.key].state == "open", timeout=1)
        for i in range(20):  # whichever replica takes each request, a is skipped
            response = await stack.http.post("/v1/chat/completions", json=chat(f"r{i}"), headers=NO_CACHE)
            assert response.headers["x-llm-edge-provider"] == "b"
        assert upstream.stats["calls"] == 0
    finally:
        await stack.close()


def single_config(nats_url: str, upstream: MockUpstream, **breaker: object) -> object:
    return make_config(
        nats_url,
        providers={"a": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}},
        models=[{"name": "solo", "targets": [{"provider": "a", "model": "gpt-4o"}]}],
        router={"retry": {"attempts": 1},
                "breaker": {"consecutive_failures": 3, "cooldown_seconds": 60} | breaker},
    )


async def test_a_single_target_model_comes_back_with_its_provider_not_a_cooldown_later(
    nats_server: Nats, upstream: MockUpstream
) -> None:
    """Fault suite `upstream-5xx`: a burst of 500s opens the only target's breaker. The model must answer
    again as soon as the provider does, not after the 60 s cooldown (on the old main: 503s for 60 s)."""
    stack = await Stack(single_config(nats_server.url, upstream)).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 500}] * 3)
        for i in range(3):
            failed = await stack.http.post("/v1/chat/completions", json=chat(f"down {i}", "solo"), headers=NO_CACHE)
            assert failed.status_code == 502
        assert (await stack.http.get("/health")).json()["router"]["checks"] == {"breaker a/gpt-4o": "open"}
        response = await stack.http.post("/v1/chat/completions", json=chat("back", "solo"), headers=NO_CACHE)
        assert response.status_code == 200  # the provider answers again (its script is spent): so do we
        assert response.json()["choices"][0]["message"]["content"]
        assert (await stack.http.get("/health")).json()["router"]["checks"] == {}  # the probe closed it
    finally:
        await stack.close()


async def test_all_breakers_open_is_a_clear_503_while_the_last_resort_probe_is_out(
    nats_server: Nats, upstream: MockUpstream
) -> None:
    stack = await Stack(single_config(nats_server.url, upstream, probe_interval_seconds=30)).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 500}] * 3 + [{"status": 500, "delay_ms": 2000}])
        for i in range(3):
            failed = await stack.http.post("/v1/chat/completions", json=chat(f"down {i}", "solo"), headers=NO_CACHE)
            assert failed.status_code == 502
        probe = asyncio.create_task(
            stack.http.post("/v1/chat/completions", json=chat("probe", "solo"), headers=NO_CACHE))
        await upstream.wait_for(lambda stats: stats["calls"] >= 4, timeout=5)  # the probe is at the provider
        started = time.monotonic()
        response = await stack.http.post("/v1/chat/completions", json=chat("meanwhile", "solo"), headers=NO_CACHE)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "all_targets_unavailable"
        assert time.monotonic() - started < 1  # at once, not after the probe
        assert (await probe).status_code == 502
        assert upstream.stats["calls"] == 4
    finally:
        await stack.close()


async def test_slow_target_and_a_two_second_deadline_is_504_at_two_seconds(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    stack = await Stack(pair_config(nats_server.url, upstream, second)).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 200, "delay_ms": 10_000}])
        started = time.monotonic()
        response = await stack.http.post("/v1/chat/completions", json=chat("slow"),
                                         headers={**NO_CACHE, "x-llm-edge-timeout": "2"})
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert 1.9 <= elapsed < 2.6
        assert second.stats["calls"] == 0  # no time was left for another target
    finally:
        await stack.close()


async def test_weighted_split_over_a_thousand_requests(nats_server: Nats) -> None:
    config = make_config(
        nats_server.url,
        providers={"heavy": {"adapter": "mock"}, "light": {"adapter": "mock"}},
        models=[{"name": "split", "strategy": "weighted", "targets": [
            {"provider": "heavy", "model": "m", "weight": 3}, {"provider": "light", "model": "m", "weight": 1}]}],
    )
    stack = await Stack(config).start()
    try:
        seen: Counter[str] = Counter()
        for batch in range(20):
            responses = await asyncio.gather(*(
                stack.http.post("/v1/chat/completions", json=chat(f"{batch}-{i}", "split"), headers=NO_CACHE)
                for i in range(50)))
            seen.update(r.headers["x-llm-edge-provider"] for r in responses)
        assert seen["heavy"] + seen["light"] == 1000
        # 750 expected; sigma = sqrt(1000 * 0.75 * 0.25) ~ 13.7, so 4 sigma is ~55
        assert abs(seen["heavy"] - 750) < 55, seen
    finally:
        await stack.close()


async def test_least_latency_converges_to_the_faster_target(nats_server: Nats) -> None:
    config = make_config(
        nats_server.url,
        providers={"slow": {"adapter": "mock", "latency_ms": 60}, "fast": {"adapter": "mock", "latency_ms": 5}},
        models=[{"name": "quick", "strategy": "least_latency", "targets": [
            {"provider": "slow", "model": "m"}, {"provider": "fast", "model": "m"}]}],
    )
    stack = await Stack(config).start()
    try:
        providers = []
        for i in range(30):
            response = await stack.http.post("/v1/chat/completions", json=chat(f"q{i}", "quick"), headers=NO_CACHE)
            providers.append(response.headers["x-llm-edge-provider"])
        assert "slow" in providers[:3]  # measured at first...
        # ...then avoided, but for the few requests (5 %) that re-measure another target
        assert providers[-20:].count("fast") >= 16, providers
    finally:
        await stack.close()


async def test_fifty_identical_concurrent_requests_make_one_upstream_call(nats_server: Nats) -> None:
    slow = MockUpstream(latency_ms=300)
    await slow.start()
    config = make_config(nats_server.url, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{slow.url}/v1"}})
    stack = await Stack(config).start()
    try:
        body = chat("the same question", "up/gpt-4o")
        responses = await asyncio.gather(*(stack.http.post("/v1/chat/completions", json=body) for _ in range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {"Echo: the same question"}
        assert slow.stats["calls"] == 1
        # no-cache asks for a fresh answer: those are not coalesced
        fresh = await asyncio.gather(*(stack.http.post("/v1/chat/completions", json=body, headers=NO_CACHE)
                                       for _ in range(3)))
        assert [r.status_code for r in fresh] == [200] * 3
        assert slow.stats["calls"] == 4
    finally:
        await stack.close()
        await slow.stop()


async def test_admission_cap_holds_across_two_workers_and_everyone_is_served(nats_server: Nats) -> None:
    slow = MockUpstream(latency_ms=100)
    await slow.start()
    config = make_config(nats_server.url, providers={
        "capped": {"adapter": "openai_compatible", "base_url": f"{slow.url}/v1", "max_in_flight": 4}})
    stack = await Stack(config).start()
    await stack.start_provider("capped", key="second-worker")
    before = REGISTRY.get_sample_value("llm_edge_queue_wait_seconds_count", {"provider": "capped"}) or 0
    try:
        responses = await asyncio.gather(*(
            stack.http.post("/v1/chat/completions", json=chat(f"queued {i}", "capped/gpt-4o"), headers=NO_CACHE)
            for i in range(40)))
        assert [r.status_code for r in responses] == [200] * 40
        assert slow.stats["calls"] == 40
        assert slow.stats["max_in_flight"] == 4  # never more, though 40 were asked for at once
        waits = REGISTRY.get_sample_value("llm_edge_queue_wait_seconds_count", {"provider": "capped"})
        assert waits is not None and waits - before == 40
        # with 4 at a time and 100 ms each, the last ones waited about a second in the queue
        quick = REGISTRY.get_sample_value("llm_edge_queue_wait_seconds_bucket", {"provider": "capped", "le": "0.5"})
        assert quick is not None and quick - before < 40
    finally:
        await stack.close()
        await slow.stop()


async def test_a_429_storm_reaches_the_client_as_429s_and_does_not_open_the_breaker(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    """A provider's 429 asks us to slow down; the target is not broken (fault suite `upstream-429`): it is
    retried after Retry-After, a final 429 reaches the client as a 429 with Retry-After, and the breaker
    stays closed, so the model answers again as soon as the provider does."""
    config = pair_config(nats_server.url, upstream, second, retry={"attempts": 2},
                         breaker={"consecutive_failures": 3, "cooldown_seconds": 60})
    stack = await Stack(config).start()  # type: ignore[arg-type]
    try:
        upstream.script([{"status": 429, "headers": {"retry-after-ms": "50"}}] * 8)  # the storm: 4 requests' worth
        for i in range(4):
            response = await stack.http.post("/v1/chat/completions", json=chat(f"storm {i}", "a/gpt-4o"),
                                             headers=NO_CACHE)
            assert response.status_code == 429, response.text
            assert response.json()["error"]["type"] == "rate_limit_error"
            assert int(response.headers["retry-after"]) >= 1
        assert upstream.stats["calls"] == 8  # each request was retried once, none refused by a breaker
        response = await stack.http.post("/v1/chat/completions", json=chat("after", "a/gpt-4o"), headers=NO_CACHE)
        assert response.status_code == 200, response.text  # the storm is over: so is the outage
        assert response.headers["x-llm-edge-provider"] == "a"
        assert stack.routers["router"].breaker(config.models[0].targets[0]).state == "closed"  # type: ignore[attr-defined]
    finally:
        await stack.close()


async def test_failures_seen_by_two_router_replicas_add_up_to_the_threshold(
    nats_server: Nats, upstream: MockUpstream, second: MockUpstream
) -> None:
    """Breaker counts hold across router replicas (issue #15, item 2): four failures of target a, two seen
    by each of two routers, open a's breaker (threshold 4) on both, as they would with one router."""
    config = pair_config(nats_server.url, upstream, second, retry={"attempts": 1},
                         breaker={"consecutive_failures": 4, "cooldown_seconds": 60})
    stack = await Stack(config).start()  # type: ignore[arg-type]
    try:
        routers = [stack.routers["router"], await stack.start_router("router-2")]
        target = config.models[0].targets[0]  # type: ignore[attr-defined]
        upstream.script([{"status": 500}] * 100)  # target a is down
        for i in range(4):  # each replica's handler called in turn: two failures each
            payload = encode(ChatRequest(model="pair", messages=[Message(role="user", content=f"down {i}")]))
            deadline = str(int((time.time() + 10) * 1000))
            answer = await routers[i % 2].handle(_ModelOnly(model="pair"), bus.Context(
                payload, {Headers.DEADLINE: deadline}, reply=""))
            assert answer is not None and decode(answer.data, type=ChatResult).provider == "b"
        assert upstream.stats["calls"] == 4
        await eventually(lambda: all(r.breaker(target).state == "open" for r in routers), timeout=2)
        for i in range(10):  # whichever replica takes each request, a is no longer tried
            response = await stack.http.post("/v1/chat/completions", json=chat(f"open {i}"), headers=NO_CACHE)
            assert response.headers["x-llm-edge-provider"] == "b"
        assert upstream.stats["calls"] == 4
    finally:
        await stack.close()
