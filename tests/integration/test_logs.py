"""What the logs say about a request (issue #15, item 10): its completion at info on the ingress (status,
model, cache, provider, time), its start, the routing order, the target called and cache decisions at
debug, retries and fallbacks at info, and a line for every failure a client sees: a stream cut, stalled
or malformed, a final upstream 429."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

ASK = [{"role": "user", "content": "tell me about logs"}]


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k",
               "idle_timeout_seconds": 0.3}}, router={"retry": {"attempts": 1}})).start()
    yield stack
    await stack.close()


def lines(caplog: pytest.LogCaptureFixture, logger: str, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(logger) and r.levelno >= level]


async def test_a_successful_request_leaves_its_trail(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await stack.openai().chat.completions.create(model="up/gpt-4o", messages=ASK)
    # One line per request at info, on completion, naming the provider; its start at debug.
    ingress = lines(caplog, "llm_edge.ingress", logging.INFO)
    assert [m for m in ingress if m.startswith("request done: 200 model=up/gpt-4o cache=miss provider=up")]
    started = lines(caplog, "llm_edge.ingress")
    assert any(m.startswith("request POST /v1/chat/completions model=up/gpt-4o stream=False") for m in started)
    assert "calling up/gpt-4o (attempt 1)" in lines(caplog, "llm_edge.router")
    assert any(m.startswith("routing up/gpt-4o") for m in lines(caplog, "llm_edge.router"))
    assert any(m.startswith("cache miss") for m in lines(caplog, "llm_edge"))


@pytest.mark.parametrize(("script", "what"), [
    ({"fail_after_chunks": 2}, "cut"),
    ({"raw": "data: {not json\n\n", "headers": {"content-type": "text/event-stream"}}, "malformed"),
    ({"delay_ms": 0, "fail_after_chunks": None}, "stalled"),
])
async def test_a_failed_stream_leaves_a_line(
    stack: Stack, upstream: MockUpstream, caplog: pytest.LogCaptureFixture, script: dict[str, object], what: str
) -> None:
    caplog.set_level(logging.INFO)
    if what == "stalled":
        upstream.chunk_interval_ms = 1000  # a chunk a second; the provider allows 0.3 s of silence
    upstream.script([{"status": 200, **script}])
    with pytest.raises(openai.APIError):
        stream = await stack.openai().chat.completions.create(
            model="up/gpt-4o", messages=ASK, stream=True, extra_headers={"cache-control": "no-cache, no-store"})
        async for _ in stream:
            pass
    failures = [m for m in lines(caplog, "llm_edge", logging.WARNING) if "stream from up failed" in m]
    assert failures, caplog.text


async def test_a_final_429_leaves_a_line(
    stack: Stack, upstream: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script([{"status": 429}])
    with pytest.raises(openai.RateLimitError):
        await stack.openai().chat.completions.create(
            model="up/gpt-4o", messages=ASK, extra_headers={"cache-control": "no-cache, no-store"})
    assert any(m.startswith("request done: 429") for m in lines(caplog, "llm_edge.ingress", logging.INFO))
