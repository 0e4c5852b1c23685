"""Faults that live in the bus seam (issue #15 items 1, 2, 3, 6), through real services on a real
nats-server: a provider worker that dies while it holds a call, a client's own short deadline, a
stream whose worker dies after its first chunk, and a cancel that must reach only its own stream.

A worker "dies" here by losing its NATS connection at once (no drain, no reply, no more heartbeats),
which is what the bus sees of a SIGKILL; the e2e tests kill real processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.stack import Stack, make_config

ALPHA, BETA = "sk-alpha-0123456789", "sk-beta-0123456789"


def active_calls() -> float:
    return REGISTRY.get_sample_value("llm_edge_active_requests", {"service": "provider.mock"}) or 0.0


def quick_loss(stack: Stack) -> None:
    """The router asks workers for a beat every 0.2 s, so a dead one is given up on after 1 s, not 5."""
    stack.routers["router"].heartbeat = 0.2


async def kill_worker(stack: Stack, key: str) -> None:
    """The worker's connection is gone, as after a SIGKILL: what it holds is never answered."""
    server = stack.servers.pop(key)
    await server.nc.close()


def client(stack: Stack) -> httpx.AsyncClient:
    assert stack.http is not None
    return stack.http


def chat(content: str, stream: bool = False) -> dict[str, object]:
    return {"model": "mock", "stream": stream, "messages": [{"role": "user", "content": content}]}


NO_CACHE = {"cache-control": "no-cache, no-store"}


@pytest.mark.timeout(60)
async def test_a_dead_worker_is_retried_on_a_live_one_and_never_opens_the_breaker(nats_server: Nats) -> None:
    config = make_config(nats_server.url, providers={"mock": {"latency_ms": 1500}},
                         router={"breaker": {"consecutive_failures": 1, "cooldown_seconds": 60}})
    stack = await Stack(config).start(providers=False)
    quick_loss(stack)
    await stack.start_provider("mock", key="doomed")
    try:
        before = active_calls()
        call = asyncio.create_task(client(stack).post("/v1/chat/completions", json=chat("outlive it"),
                                                   headers=NO_CACHE))
        await eventually(lambda: active_calls() > before)  # the doomed worker holds the call
        await stack.start_provider("mock", key="alive")
        await kill_worker(stack, "doomed")
        response = await call
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: outlive it"
        # A dead worker is our fault, not the target's: the breaker (threshold 1) stayed closed.
        again = await client(stack).post("/v1/chat/completions", json=chat("and again"), headers=NO_CACHE)
        assert again.status_code == 200, again.text
    finally:
        await stack.close()


async def test_a_clients_short_deadline_never_opens_the_shared_breaker(nats_server: Nats) -> None:
    config = make_config(nats_server.url, providers={"mock": {"latency_ms": 300}},
                         router={"breaker": {"consecutive_failures": 2, "cooldown_seconds": 60}})
    stack = await Stack(config).start()
    try:
        for i in range(4):
            response = await client(stack).post("/v1/chat/completions", json=chat(f"hurry {i}"),
                                             headers={**NO_CACHE, "x-llm-edge-timeout": "0.05"})
            assert response.status_code == 504, response.text
        patient = await client(stack).post("/v1/chat/completions", json=chat("no hurry"), headers=NO_CACHE)
        assert patient.status_code == 200, patient.text
        assert not any(b.state != "closed" for b in stack.routers["router"].breakers.values())
    finally:
        await stack.close()


def data_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.timeout(60)
async def test_a_started_stream_whose_worker_dies_ends_with_one_error_and_is_not_retried(
    nats_server: Nats,
) -> None:
    config = make_config(nats_server.url, providers={"mock": {"stream_chunks": 6, "chunk_interval_ms": 400}},
                         ingress={"stream_idle_timeout_seconds": 60})
    stack = await Stack(config).start(providers=False)
    quick_loss(stack)
    await stack.start_provider("mock", key="doomed")
    try:
        events: list[str] = []
        async with client(stack).stream("POST", "/v1/chat/completions", json=chat("cut me", stream=True)) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 1:  # under way: a live worker appears, the one streaming dies
                    await stack.start_provider("mock", key="alive")
                    await kill_worker(stack, "doomed")
        assert "[DONE]" not in events
        errors = [json.loads(e)["error"] for e in events if "error" in json.loads(e)]
        assert len(errors) == 1 and events[-1] == json.dumps({"error": errors[0]}, separators=(",", ":"))
        # Not restarted on the live worker behind the client's back (that showed up as a gap).
        assert errors[0]["code"] != "stream_gap", errors
        assert "lost" in errors[0]["code"], errors
    finally:
        await stack.close()


@pytest.mark.timeout(60)
async def test_a_stream_whose_router_dies_before_its_first_chunk_goes_to_another_router(nats_server: Nats) -> None:
    """Nothing has reached the client yet, so a lost router is no reason to fail the stream (fault suite
    `kill-router`: such a stream used to get a 503)."""
    config = make_config(nats_server.url, providers={"mock": {"latency_ms": 6000}})
    stack = await Stack(config).start()
    stack.apps[0].gateway.heartbeat = 0.2  # a silent router is given up on after 1 s, before the first chunk (6 s)
    try:
        async def read() -> tuple[int, list[str]]:
            async with client(stack).stream("POST", "/v1/chat/completions", json=chat("reroute me", True)) as got:
                return got.status_code, [line[6:] async for line in got.aiter_lines() if line.startswith("data: ")]

        reading = asyncio.create_task(read())  # (its status comes with the first chunk)
        await eventually(lambda: active_calls() == 1, timeout=5)  # the router has passed it to the worker
        await stack.start_router("router-2")
        await kill_worker(stack, "router")  # the router holding the stream dies (its connection is gone)
        status, events = await reading
        assert status == 200
        assert events[-1] == "[DONE]" and not any('"error"' in e for e in events), events
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1] if
                       json.loads(e)["choices"])
    finally:
        await stack.close()


def key(name: str, secret: str) -> dict[str, str]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest()}


async def test_one_tenant_cannot_end_another_tenants_stream(nats_server: Nats) -> None:
    config = make_config(nats_server.url, keys=[key("alpha", ALPHA), key("beta", BETA)],
                         providers={"mock": {"stream_chunks": 8, "chunk_interval_ms": 150}})
    stack = await Stack(config).start()
    shared_id = "req-everyone-can-guess-1"
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            # Beta starts a stream with the same x-request-id, then alpha; beta walks away mid-stream.
            beta = http.stream("POST", "/v1/chat/completions", json=chat("beta's stream", stream=True),
                               headers={"authorization": f"Bearer {BETA}", "x-request-id": shared_id})
            beta_response = await beta.__aenter__()
            beta_lines = beta_response.aiter_lines()
            async for line in beta_lines:
                if line.startswith("data: "):
                    break
            async with http.stream("POST", "/v1/chat/completions", json=chat("alpha's stream", stream=True),
                                   headers={"authorization": f"Bearer {ALPHA}", "x-request-id": shared_id}
                                   ) as alpha_response:
                assert alpha_response.headers["x-request-id"] == shared_id  # echoed for the client's logs
                alpha_lines = alpha_response.aiter_lines()
                first = [line async for line in _until_data(alpha_lines)]
                await beta.__aexit__(None, None, None)  # beta disconnects: its cancel goes out
                rest = [line async for line in alpha_lines]
        events = data_events("\n".join(first + rest))
        assert events[-1] == "[DONE]", events[-3:]
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                       for e in events[:-1] if json.loads(e).get("choices"))
        assert text == "Mock reply to: alpha's stream"
    finally:
        await stack.close()


async def _until_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        yield line
        if line.startswith("data: "):
            return
