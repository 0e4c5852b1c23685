"""The context-window fallback for providers that report an overflow only in their own words: Anthropic,
Gemini and Bedrock answer with their documented overflow body (the mock upstream speaks each one's error
shape), the adapter makes it a `ContextWindowExceeded`, and the router moves to a target with a larger
window. Driven through the gateway with the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config
from tests.unit.adapter_io import fixture

NO_CACHE = {"cache-control": "no-cache, no-store"}

# provider settings (`{url}`: the mock upstream), target model, the documented overflow fixture
PROVIDERS: dict[str, tuple[dict[str, str], str, str]] = {
    "anthropic": ({"adapter": "anthropic", "base_url": "{url}", "api_key": "k"},
                  "claude-3-5-haiku-latest", "anthropic/error_context_window.json"),
    "gemini": ({"adapter": "gemini", "base_url": "{url}", "api_key": "k"},
               "gemini-2.0-flash", "gemini/error_context_window.json"),
    "bedrock": ({"adapter": "bedrock", "base_url": "{url}", "api_key": "k"},
                "anthropic.claude-3-haiku-20240307-v1:0", "bedrock/error_input_too_long.json"),
}


def overflow_message(name: str) -> str:
    body: Any = json.loads(fixture(name))
    return str(body["error"]["message"] if "error" in body else body["message"])


@pytest.fixture(params=list(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def start(nats_url: str, upstream: MockUpstream, provider: str, *, larger: bool) -> Stack:
    settings, model, _ = PROVIDERS[provider]
    targets: list[dict[str, Any]] = [{"provider": "small", "model": model, "context_window": 8000}]
    if larger:
        targets.append({"provider": "mock", "model": "mock", "context_window": 1_000_000})
    config = make_config(
        nats_url,
        providers={"small": {k: v.replace("{url}", upstream.url) for k, v in settings.items()}, "mock": {}},
        models=[{"name": "long-context", "targets": targets}],
    )
    return await Stack(config).start()


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream, provider: str) -> AsyncIterator[Stack]:
    stack = await start(nats_server.url, upstream, provider, larger=True)
    yield stack
    await stack.close()


async def test_an_overflow_moves_to_the_larger_target(stack: Stack, upstream: MockUpstream, provider: str) -> None:
    upstream.script([{"status": 400, "message": overflow_message(PROVIDERS[provider][2])}])
    response = await stack.openai().chat.completions.with_raw_response.create(
        model="long-context", messages=[{"role": "user", "content": "a very long prompt"}],
        extra_headers=NO_CACHE)
    assert response.headers["x-llm-edge-provider"] == "mock"
    assert response.parse().choices[0].message.content is not None
    assert upstream.stats["calls"] == 1  # not retried on the small target


async def test_a_streamed_overflow_moves_to_the_larger_target(
    stack: Stack, upstream: MockUpstream, provider: str
) -> None:
    upstream.script([{"status": 400, "message": overflow_message(PROVIDERS[provider][2])}])
    stream = await stack.openai().chat.completions.create(
        model="long-context", messages=[{"role": "user", "content": "a very long prompt"}], stream=True,
        extra_headers=NO_CACHE)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text  # the larger target answered
    assert upstream.stats["calls"] == 1


async def test_without_a_larger_target_the_client_sees_the_overflow(
    nats_server: Nats, upstream: MockUpstream, provider: str
) -> None:
    stack = await start(nats_server.url, upstream, provider, larger=False)
    try:
        message = overflow_message(PROVIDERS[provider][2])
        upstream.script([{"status": 400, "message": message}])
        with pytest.raises(openai.BadRequestError) as caught:
            await stack.openai().chat.completions.create(
                model="long-context", messages=[{"role": "user", "content": "a very long prompt"}],
                extra_headers=NO_CACHE)
        assert caught.value.code == "context_length_exceeded"
        assert caught.value.param == "messages"
        assert message in caught.value.message
    finally:
        await stack.close()
