"""A client that hangs up before its stream's first chunk (issue #15, item 10): the upstream call is closed
at once, instead of when that first chunk arrives."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url, cache={"enabled": False}, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}})).start()
    yield stack
    await stack.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_leaving_before_the_first_chunk_closes_the_upstream_call(
    stack: Stack, upstream: MockUpstream, path: str
) -> None:
    upstream.script([{"status": 200, "delay_ms": 10_000}])  # the upstream takes its time to start
    body = {"model": "up/gpt-4o", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "take your time"}]}
    assert stack.http is not None
    call = asyncio.create_task(stack.http.post(path, json=body))
    reached = time.monotonic() + 5
    while upstream.stats["in_flight"] < 1:  # the mock wakes waiters on answers, not on arrivals: poll
        assert time.monotonic() < reached and not call.done(), "the call never reached the upstream"
        await asyncio.sleep(0.01)
    call.cancel()  # the client hangs up
    with pytest.raises(asyncio.CancelledError):
        await call
    left = time.monotonic()
    stats = await upstream.wait_for(lambda s: s["disconnects"] >= 1, timeout=2)
    assert stats["disconnects"] == 1
    assert time.monotonic() - left < 2  # at once, not after the upstream's 10 s
    assert upstream.stats["calls"] == 1  # and not retried elsewhere or again


async def test_a_plain_client_that_leaves_closes_the_upstream_call(stack: Stack, upstream: MockUpstream) -> None:
    """A non-streamed client with a short timeout on a slow upstream: the upstream call is closed when the
    client goes, not left running until the upstream answers (issue #15, item 10)."""
    upstream.script([{"status": 200, "delay_ms": 10_000}])  # the answer would take 10 s
    client = stack.openai(timeout=0.5)  # the client gives up after half a second
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="up/gpt-4o", max_tokens=50,
                                             messages=[{"role": "user", "content": "no hurry"}])
    stats = await upstream.wait_for(lambda s: s["disconnects"] >= 1, timeout=3)
    assert stats["disconnects"] == 1
    assert time.monotonic() - started < 4  # well before the upstream's 10 s
    assert upstream.stats["calls"] == 1  # the call was closed, not retried on another worker or target
    await client.close()


async def test_a_pipelining_client_that_leaves_closes_the_upstream_call(stack: Stack, upstream: MockUpstream) -> None:
    """Two requests in one write (HTTP/1.1 pipelining), then the client closes while the first waits for its
    answer: its upstream call is closed. uvicorn tells only the connection's newest request (the second,
    queued) that the client left, so a handler waiting in `receive()` for the first never heard it."""
    upstream.script([{"status": 200, "delay_ms": 10_000}, {"status": 200, "delay_ms": 10_000}])
    body = json.dumps({"model": "up/gpt-4o", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "pipelined"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write((head + body) * 2)
    await writer.drain()
    reached = time.monotonic() + 5
    while upstream.stats["in_flight"] < 1:  # the mock wakes waiters on answers, not on arrivals: poll
        assert time.monotonic() < reached, "the call never reached the upstream"
        await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    left = time.monotonic()
    stats = await upstream.wait_for(lambda s: s["disconnects"] >= 1, timeout=3)
    assert stats["disconnects"] == 1
    assert time.monotonic() - left < 3  # at once, not after the upstream's 10 s
    assert upstream.stats["calls"] == 1  # the queued second request never started
