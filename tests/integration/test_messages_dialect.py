"""Anthropic's Messages API at the edge, end to end through real services: the official `anthropic` SDK
against the gateway, answered by the mock provider and by mock OpenAI and Anthropic upstreams.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from services.providers.mock.adapter import count_tokens
from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

MODELS = ["mock", "up/gpt-4o-mini", "claude/claude-sonnet-4-5"]
WEATHER_TOOL = {"name": "get_weather", "description": "Weather at a place",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}
NO_CACHE = {"cache-control": "no-cache, no-store"}


def providers(upstream: MockUpstream) -> dict[str, dict[str, object]]:
    return {
        "mock": {"stream_chunks": 6},
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "k"},
        "dies": {"adapter": "mock", "stream_fail_after": 2},
    }


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, providers=providers(upstream), router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def client(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.url, api_key="anything", max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_plain_message_with_a_system_prompt(stack: Stack) -> None:
    raw = await client(stack).messages.with_raw_response.create(
        model="mock", max_tokens=256, system="You are terse.", messages=user("Hello"))
    message = await raw.parse()
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Mock reply to: Hello")]
    assert message.model == "mock"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == count_tokens("You are terse.") + count_tokens("Hello")
    assert message.usage.output_tokens == count_tokens("Mock reply to: Hello")
    assert raw.headers["x-llm-edge-provider"] == "mock"
    assert raw.headers["x-llm-edge-cache"] == "miss"
    assert raw.headers["x-request-id"] == message._request_id
    assert float(raw.headers["x-llm-edge-latency-ms"]) > 0
    assert "x-llm-edge-cost-usd" in raw.headers


async def test_max_tokens_ends_the_answer_with_max_tokens(stack: Stack) -> None:
    message = await client(stack).messages.create(model="mock", max_tokens=2, messages=user("a long question"))
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and len(message.content[0].text) <= 8


async def test_openai_compatible_upstream_receives_the_translated_request(
    stack: Stack, upstream: MockUpstream
) -> None:
    message = await client(stack).messages.create(
        model="up/gpt-4o-mini", max_tokens=50, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is NATS?"}]}],
        stop_sequences=["END"], metadata={"user_id": "user-1"},
        extra_body={"temperature": 0.5, "top_p": 0.9})  # older SDKs send them as arguments
    assert message.content[0].type == "text" and message.content[0].text == "Echo: What is NATS?"
    assert message.model == "gpt-4o-mini"
    assert upstream.stats["calls_by_path"] == {"/v1/chat/completions": 1}
    sent = upstream.stats["last_request"]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is NATS?"}]},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"], sent["user"]) == (
        50, 0.5, 0.9, ["END"], "user-1")


async def test_anthropic_upstream_receives_an_anthropic_request(stack: Stack, upstream: MockUpstream) -> None:
    message = await client(stack).messages.create(
        model="claude/claude-sonnet-4-5", max_tokens=64, system="Be brief.", messages=user("Hi Claude"))
    assert message.content[0].type == "text" and message.content[0].text == "Echo: Hi Claude"
    sent = upstream.stats["last_request"]
    assert upstream.stats["calls_by_path"] == {"/v1/messages": 1}
    assert (sent["model"], sent["max_tokens"], sent["system"]) == ("claude-sonnet-4-5", 64, "Be brief.")
    assert sent["messages"] == [{"role": "user", "content": "Hi Claude"}]  # as the client sent it


async def test_a_stop_sequence_the_anthropic_upstream_matched_is_reported(
    stack: Stack, upstream: MockUpstream
) -> None:
    upstream.script([{"status": 200, "body": {
        "id": "msg_up_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "One, two, "}], "stop_reason": "stop_sequence",
        "stop_sequence": "three", "usage": {"input_tokens": 9, "output_tokens": 4}}}])
    message = await client(stack).messages.create(
        model="claude/claude-sonnet-4-5", max_tokens=64, stop_sequences=["three"], messages=user("Count"))
    assert upstream.stats["last_request"]["stop_sequences"] == ["three"]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 4)


@pytest.mark.parametrize("model", ["up/gpt-4o", "claude/claude-sonnet-4-5"])
async def test_tool_use_round_trip(stack: Stack, model: str) -> None:
    sdk = client(stack)
    question = user("What is the weather in Paris?")
    first = await sdk.messages.create(model=model, max_tokens=100, tools=[WEATHER_TOOL], messages=question)
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id and call.input == {"location": "Paris"}
    follow_up = [*question, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}]}]
    second = await sdk.messages.create(model=model, max_tokens=100, tools=[WEATHER_TOOL], messages=follow_up)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text.startswith("Echo: ")


@pytest.mark.parametrize("model", MODELS)
async def test_messages_stream_assembles_the_same_answer(stack: Stack, model: str) -> None:
    sdk = client(stack)
    messages = user(f"Tell me about streams via {model}")
    whole = await sdk.messages.create(model=model, max_tokens=200, messages=messages, extra_headers=NO_CACHE)
    pieces = []
    async with sdk.messages.stream(model=model, max_tokens=200, messages=messages,
                                   extra_headers=NO_CACHE) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == whole.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.id.startswith("msg_") and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens > 0
    assert final.usage.input_tokens == whole.usage.input_tokens > 0


async def test_create_stream_true_sends_anthropics_event_sequence(stack: Stack) -> None:
    events = [e async for e in await client(stack).messages.create(
        model="mock", max_tokens=200, messages=user("one two three four five six"), stream=True)]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds) > 6
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == "Mock reply to: one two three four five six"
    assert events[-2].delta.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert events[-2].usage.output_tokens == count_tokens(text)  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["up/gpt-4o", "claude/claude-sonnet-4-5"])
async def test_streamed_tool_use_arrives_whole(stack: Stack, model: str) -> None:
    async with client(stack).messages.stream(model=model, max_tokens=100, tools=[WEATHER_TOOL],
                                             messages=user("What is the weather in Paris?")) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"location": "Paris"}


async def test_second_identical_request_is_a_cache_hit(stack: Stack, upstream: MockUpstream) -> None:
    sdk = client(stack)
    ask = {"model": "up/gpt-4o", "max_tokens": 100,
           "messages": user("cache this answer please, it should come back in quite a few words")}
    first = await sdk.messages.with_raw_response.create(**ask)
    assert first.headers["x-llm-edge-cache"] == "miss"
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)
    second = await sdk.messages.with_raw_response.create(**ask)
    assert second.headers["x-llm-edge-cache"] == "hit-l1"
    whole, again = await first.parse(), await second.parse()
    assert again.content == whole.content and again.usage == whole.usage
    streamed = await sdk.messages.with_raw_response.create(**ask, stream=True)
    assert streamed.headers["x-llm-edge-cache"] == "hit-l1"
    events = [e async for e in await streamed.parse()]
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]  # type: ignore[union-attr]
    assert len(deltas) >= 3 and "".join(deltas) == whole.content[0].text  # type: ignore[union-attr]
    assert events[-1].type == "message_stop"
    assert upstream.stats["calls"] == 1


async def test_missing_max_tokens_is_a_bad_request(stack: Stack) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client(stack).post("/v1/messages", cast_to=anthropic.types.Message,
                                 body={"model": "mock", "messages": user("no limit")})
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in caught.value.body["error"]["message"]  # type: ignore[index]


async def test_unknown_model_is_not_found(stack: Stack) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client(stack).messages.create(model="no-such-model", max_tokens=10, messages=user("hi"))
    assert "no-such-model" in caught.value.message
    assert caught.value.request_id and caught.value.body["request_id"] == caught.value.request_id  # type: ignore[index]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'{"model": "mock", "max_tokens": "ten", "messages": []}'])
async def test_malformed_body_is_400_in_anthropics_shape(stack: Stack, body: bytes) -> None:
    response = await stack.http.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]


async def test_documents_reach_providers_that_read_them_and_are_named_where_they_cannot(
    stack: Stack, upstream: MockUpstream
) -> None:
    sdk = client(stack)
    await sdk.messages.create(model="mock", max_tokens=10, extra_body={"top_k": 5}, messages=user("hi"))  # dropped
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
    await sdk.messages.create(model="up/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": [pdf]}])
    assert upstream.stats["last_request"]["messages"][0]["content"] == [
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]
    await sdk.messages.create(model="claude/claude-sonnet-4-5", max_tokens=10,
                              messages=[{"role": "user", "content": [pdf]}])
    assert upstream.stats["last_request"]["messages"][0]["content"] == [pdf]
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    with pytest.raises(anthropic.BadRequestError, match="openai_compatible: documents by URL"):
        await sdk.messages.create(model="up/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": [by_url]}])


async def test_upstream_error_keeps_its_status(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "3"}}] * 2)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client(stack).messages.create(model="up/gpt-4o", max_tokens=10, messages=user("429"))
    assert caught.value.response.headers["retry-after"] == "3"
    with pytest.raises(anthropic.RateLimitError):
        async with client(stack).messages.stream(model="up/gpt-4o", max_tokens=10, messages=user("429")) as s:
            await s.get_final_message()


@pytest.mark.parametrize("model", ["dies/m", "up/gpt-4o"])
async def test_failure_mid_stream_raises_and_never_stops_cleanly(
    stack: Stack, upstream: MockUpstream, model: str
) -> None:
    upstream.script([{"status": 200, "fail_after_chunks": 2}] * 2)
    kinds: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async for event in await client(stack).messages.create(
                model=model, max_tokens=100, stream=True, messages=user("one two three four five six seven")):
            kinds.append(event.type)
    assert "content_block_delta" in kinds and "message_stop" not in kinds
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": user("one two three four five")}
    response = await stack.http.post("/v1/messages", json=body)
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names


async def test_stall_past_the_idle_timeout_is_an_error_event(nats_server: Nats) -> None:
    config = make_config(nats_server.url, providers={"mock": {"chunk_interval_ms": 1000}},
                         ingress={"stream_idle_timeout_seconds": 0.2})
    stack = await Stack(config).start()
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client(stack).messages.stream(model="mock", max_tokens=100,
                                                     messages=user("slow slow slow")) as stream:
                await stream.get_final_message()
        assert caught.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]
    finally:
        await stack.close()


async def test_client_disconnect_closes_the_upstream_call(nats_server: Nats) -> None:
    slow = MockUpstream(chunks=50, chunk_interval_ms=100)
    await slow.start()
    stack = await Stack(make_config(nats_server.url, providers=providers(slow))).start()
    try:
        body = {"model": "up/gpt-4o", "max_tokens": 1000, "stream": True, "messages": user(" ".join(["word"] * 200))}
        async with httpx.AsyncClient(base_url=stack.url) as http:
            async with http.stream("POST", "/v1/messages", json=body) as response:
                deltas = 0
                async for line in response.aiter_lines():
                    deltas += line == "event: content_block_delta"
                    if deltas == 2:
                        break
            closed_at = time.monotonic()
        stats = await slow.wait_for(lambda s: s["disconnects"] >= 1, timeout=1.0)
        assert stats["disconnects"] == 1
        assert time.monotonic() - closed_at < 1.0
    finally:
        await stack.close()
        await slow.stop()


async def test_without_a_router_it_is_a_503_at_once(stack: Stack) -> None:
    await stack.stop_service("router")
    started = time.monotonic()
    response = await stack.http.post("/v1/messages", json={
        "model": "mock", "max_tokens": 10, "stream": True, "messages": user("anyone?")})
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503
    assert json.loads(response.text)["error"]["type"] == "api_error"


async def test_oversized_body_and_wrong_method_in_anthropics_shape_then_healthy(nats_server: Nats) -> None:
    stack = await Stack(make_config(nats_server.url, ingress={"max_body_bytes": 4096})).start()
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client(stack).messages.create(model="mock", max_tokens=10, messages=user("x" * 10_000))
        assert caught.value.status_code == 413
        assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        wrong = await stack.http.get("/v1/messages")
        assert wrong.status_code == 405 and wrong.json()["type"] == "error"
        for _ in range(3):
            await stack.http.post("/v1/messages", content=b"{{{{")
        message = await client(stack).messages.create(model="mock", max_tokens=10, messages=user("still there?"))
        assert message.content[0].type == "text" and message.content[0].text == "Mock reply to: still there?"
    finally:
        await stack.close()
