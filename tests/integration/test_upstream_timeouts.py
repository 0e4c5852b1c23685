"""Upstream waits (issue #15, item 9): connect, first byte and idle between chunks are separate, and the
request's deadline is the only total. A healthy stream slower than `timeout_seconds` in total is not cut;
a stream that stalls ends with an error event; an upstream that never starts answering is a 504."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

ASK = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


async def started(nats_url: str, upstream: MockUpstream, **waits: Any) -> Stack:
    return await Stack(make_config(nats_url, cache={"enabled": False}, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k", **waits}},
        router={"retry": {"attempts": 1}})).start()


@pytest.fixture
async def slow() -> AsyncIterator[MockUpstream]:
    server = MockUpstream(chunks=6, chunk_interval_ms=400)  # a healthy stream of about 2 s
    await server.start()
    yield server
    await server.stop()


async def test_a_healthy_stream_outlives_the_first_byte_timeout(nats_server: Nats, slow: MockUpstream) -> None:
    stack = await started(nats_server.url, slow, timeout_seconds=1.0)
    try:
        begun = time.monotonic()
        stream = await stack.openai().chat.completions.create(model="up/gpt-4o", messages=ASK, stream=True)
        chunks = [chunk async for chunk in stream]
        assert time.monotonic() - begun > 1.5  # longer than timeout_seconds, and whole
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Echo: {ASK[0]['content']}"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    finally:
        await stack.close()


async def test_a_stream_that_stalls_ends_with_an_error_event(nats_server: Nats) -> None:
    stalling = MockUpstream(chunks=4, chunk_interval_ms=1500)
    await stalling.start()
    stack = await started(nats_server.url, stalling, idle_timeout_seconds=0.3)
    try:
        begun = time.monotonic()
        stream = await stack.openai().chat.completions.create(model="up/gpt-4o", messages=ASK, stream=True)
        with pytest.raises(openai.APIError) as failed:
            async for _ in stream:
                pass
        assert "stalled" in str(failed.value)
        assert time.monotonic() - begun < 1.4  # noticed at the idle wait, not at the next chunk
    finally:
        await stack.close()
        await stalling.stop()


async def test_an_upstream_that_never_starts_is_a_504_at_the_first_byte_wait(
    nats_server: Nats, upstream: MockUpstream
) -> None:
    stack = await started(nats_server.url, upstream, timeout_seconds=0.5)
    try:
        upstream.script([{"status": 200, "delay_ms": 5000}])
        begun = time.monotonic()
        with pytest.raises(openai.APIStatusError) as failed:
            await stack.openai().chat.completions.create(model="up/gpt-4o", messages=ASK)
        assert failed.value.status_code == 504
        assert time.monotonic() - begun < 2.0
    finally:
        await stack.close()


async def test_the_request_deadline_is_the_only_total(nats_server: Nats, slow: MockUpstream) -> None:
    stack = await started(nats_server.url, slow)
    try:
        begun = time.monotonic()
        stream = await stack.openai().chat.completions.create(
            model="up/gpt-4o", messages=ASK, stream=True, extra_headers={"x-llm-edge-timeout": "1"})
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        assert 0.9 < time.monotonic() - begun < 2.0
    finally:
        await stack.close()
