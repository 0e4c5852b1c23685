"""Streaming end to end through real services: the official `openai` SDK reading SSE from the gateway,
fed by the mock provider and by mock OpenAI and Anthropic upstreams speaking their documented streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}


def providers(upstream: MockUpstream) -> dict[str, dict[str, object]]:
    return {
        "mock": {"stream_chunks": 6},
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "k"},
        "broken": {"adapter": "mock", "fail_rate": 1.0, "fail_status": 503},
        "dies": {"adapter": "mock", "stream_fail_after": 2},
    }


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(
        nats_server.url,
        providers=providers(upstream),
        models=[{"name": "fallback", "targets": [
            {"provider": "broken", "model": "x"}, {"provider": "up", "model": "gpt-4o"}]}],
        router={"retry": {"attempts": 1}},
    )
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def collect(client: openai.AsyncOpenAI, **kwargs: object) -> tuple[str, list, object]:
    chunks = []
    async for chunk in await client.chat.completions.create(stream=True, **kwargs):  # type: ignore[call-overload]
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, chunks[-1].usage


@pytest.mark.parametrize("model", ["mock", "up/gpt-4o-mini", "claude/claude-sonnet-4-5"])
async def test_stream_text_equals_the_non_streamed_answer(stack: Stack, model: str) -> None:
    client = stack.openai()
    messages = [{"role": "user", "content": f"Tell me about streams via {model}"}]
    whole = await client.chat.completions.create(model=model, messages=messages,
                                                 extra_headers={"cache-control": "no-cache, no-store"})
    text, chunks, usage = await collect(client, model=model, messages=messages,
                                        stream_options={"include_usage": True},
                                        extra_headers={"cache-control": "no-cache, no-store"})
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_sync_client_streams_too(stack: Stack) -> None:
    def read() -> str:
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "sync please"}], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await asyncio.to_thread(read) == "Mock reply to: sync please"


@pytest.mark.parametrize("model", ["up/gpt-4o", "claude/claude-sonnet-4-5"])
async def test_tool_call_arguments_arrive_whole(stack: Stack, model: str) -> None:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    stream = await stack.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL], stream=True)
    async for chunk in stream:
        for part in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            if part.function:
                call["name"] += part.function.name or ""
                call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}


@pytest.mark.parametrize("model", ["dies/m", "up/gpt-4o"])
async def test_provider_dying_mid_stream_ends_with_an_error_event_and_no_done(
    stack: Stack, upstream: MockUpstream, model: str
) -> None:
    upstream.script([{"status": 200, "fail_after_chunks": 2}] * 2)
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
    async with stack.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        raw = (await response.aread()).decode()
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert "error" in json.loads(events[-1])
    with pytest.raises(openai.APIError):
        await collect(stack.openai(), model=model, messages=body["messages"])


async def test_failure_before_the_first_chunk_falls_back(stack: Stack) -> None:
    text, chunks, _ = await collect(stack.openai(), model="fallback",
                                    messages=[{"role": "user", "content": "fall back please"}])
    assert text == "Echo: fall back please"
    assert chunks[0].model == "gpt-4o"


async def test_error_before_any_chunk_is_a_plain_http_error(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "3"}}])
    with pytest.raises(openai.RateLimitError):
        await collect(stack.openai(), model="up/gpt-4o", messages=[{"role": "user", "content": "429"}])


async def test_client_disconnect_closes_the_upstream_call(nats_server: Nats) -> None:
    slow = MockUpstream(chunks=50, chunk_interval_ms=100)
    await slow.start()
    stack = await Stack(make_config(nats_server.url, providers=providers(slow))).start()
    try:
        body = {"model": "up/gpt-4o", "stream": True, "messages": [
            {"role": "user", "content": " ".join(["word"] * 200)}]}
        async with httpx.AsyncClient(base_url=stack.url) as client:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = response.aiter_lines()
                seen = 0
                async for line in lines:
                    seen += line.startswith("data: ")
                    if seen == 2:
                        break
            closed_at = time.monotonic()
        stats = await slow.wait_for(lambda s: s["disconnects"] >= 1, timeout=1.0)
        assert stats["disconnects"] == 1
        assert time.monotonic() - closed_at < 1.0
    finally:
        await stack.close()
        await slow.stop()


async def test_cached_stream_replays_as_several_chunks(stack: Stack, upstream: MockUpstream) -> None:
    messages = [{"role": "user", "content": "a long enough question to need several chunks of answer"}]
    first, _, _ = await collect(stack.openai(), model="up/gpt-4o", messages=messages)
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)
    raw = await stack.openai().chat.completions.with_raw_response.create(
        model="up/gpt-4o", messages=messages, stream=True)
    assert raw.headers["x-llm-edge-cache"] == "hit-l1"
    chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == first
    assert len([c for c in chunks if c.choices[0].delta.content]) >= 3
    whole = await stack.openai().chat.completions.with_raw_response.create(model="up/gpt-4o", messages=messages)
    assert whole.headers["x-llm-edge-cache"] == "hit-l1"
    assert whole.parse().choices[0].message.content == first
    assert upstream.stats["calls"] == 1


async def test_non_streamed_answer_serves_a_later_stream(stack: Stack, upstream: MockUpstream) -> None:
    messages = [{"role": "user", "content": "first whole, then streamed"}]
    whole = await stack.openai().chat.completions.create(model="up/gpt-4o", messages=messages)
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)
    text, _, usage = await collect(stack.openai(), model="up/gpt-4o", messages=messages,
                                   stream_options={"include_usage": True})
    assert text == whole.choices[0].message.content
    assert usage is not None and usage.total_tokens == whole.usage.total_tokens
    assert upstream.stats["calls"] == 1


async def test_stall_longer_than_the_idle_timeout_is_an_error(nats_server: Nats) -> None:
    config = make_config(nats_server.url, providers={"mock": {"chunk_interval_ms": 1000}},
                         ingress={"stream_idle_timeout_seconds": 0.2})
    stack = await Stack(config).start()
    try:
        body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "slow slow slow"}]}
        response = await stack.http.post("/v1/chat/completions", json=body)
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert "[DONE]" not in events
        assert json.loads(events[-1])["error"]["code"] == "stream_timeout"
    finally:
        await stack.close()


async def test_streaming_without_a_router_is_503(stack: Stack) -> None:
    await stack.stop_service("router")
    started = time.monotonic()
    response = await stack.http.post("/v1/chat/completions", json={
        "model": "mock", "stream": True, "messages": [{"role": "user", "content": "anyone?"}]})
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_router"


async def test_hundred_concurrent_streams_get_their_own_chunks_in_order(stack: Stack) -> None:
    client = stack.openai()

    async def one(i: int) -> tuple[str, str]:
        prompt = f"stream number {i} " + "x " * (i % 7)
        text, _, _ = await collect(client, model="mock", messages=[{"role": "user", "content": prompt}])
        return text, f"Mock reply to: {prompt}"

    for text, expected in await asyncio.gather(*(one(i) for i in range(100))):
        assert text == expected


async def test_a_lost_chunk_ends_the_stream_with_an_error(nats_server: Nats) -> None:
    """A router stand-in on the real bus that skips chunk 2: the client must not get a clean ending."""
    from shared import bus
    from shared.messages import StreamChunk, StreamEnd, encode

    stack = Stack(make_config(nats_server.url))
    await stack.start(cache=False, providers=False)
    await stack.stop_service("router")
    nc = (await bus.connect(nats_server.url, "lossy-router")).nc

    async def lossy(msg) -> None:  # type: ignore[no-untyped-def]
        for seq in (0, 1, 3):
            await nc.publish(msg.reply, encode(StreamChunk(seq=seq, content=f"part{seq} ", id="x", model="m")))
        await nc.publish(msg.reply, encode(StreamEnd(
            seq=4, id="x", model="m", created=0, finish_reason="stop", usage=None, provider="p",
            target_model="m")))

    await nc.subscribe(stack.config.prefix + ".route", cb=lossy)
    await nc.flush()
    try:
        body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "gap"}]}
        response = await stack.http.post("/v1/chat/completions", json=body)
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["part0 ", "part1 "]
        assert json.loads(events[-1])["error"]["code"] == "stream_gap"
        assert "[DONE]" not in events
    finally:
        await nc.close()
        await stack.close()
