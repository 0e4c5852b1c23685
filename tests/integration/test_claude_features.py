"""What Claude Code and Anthropic's SDKs use beyond plain messages, through real services with the official
`anthropic` SDK: extended thinking (streamed and not, tool use after thinking), prompt caching (usage and
cost), `count_tokens`, betas; against the Anthropic-format and the OpenAI-format mock upstreams.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import bpe_openai  # type: ignore[import-untyped]
import httpx
import pytest

from shared.pricing import PER_TOKEN, table
from tests.infra import Nats
from tests.mockupstream.formats import signature
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

WEATHER = {"name": "get_weather", "description": "Weather at a place",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}
THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    providers = {
        "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "sk-upstream"},
        "strict": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "sk-upstream",
                   "anthropic_betas": ["interleaved-thinking-2025-05-14"]},
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "sk-upstream"},
        "bedrock": {"adapter": "bedrock", "base_url": upstream.url, "api_key": "bedrock-api-key"},
    }
    config = make_config(nats_server.url, providers=providers, router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def client(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.url, api_key="anything", max_retries=0)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- thinking ---------------------------------------------------------------------------------------------


async def test_thinking_reaches_anthropic_as_sent_and_comes_back_signed(stack: Stack, upstream: MockUpstream) -> None:
    message = await client(stack).messages.create(
        model="claude/claude-sonnet-4-5", max_tokens=2048, thinking=THINKING, messages=ask("Think first"))
    assert [b.type for b in message.content] == ["thinking", "text"]
    block = message.content[0]
    assert block.type == "thinking" and block.signature == signature(block.thinking) and block.thinking
    assert upstream.stats["last_request"]["thinking"] == THINKING


async def test_streamed_thinking_has_its_deltas_and_signature(stack: Stack) -> None:
    async with client(stack).messages.stream(model="claude/claude-sonnet-4-5", max_tokens=2048, thinking=THINKING,
                                             messages=ask("Stream your thinking")) as stream:
        kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) async for e in stream]
        final = await stream.get_final_message()
    assert ("content_block_delta", "thinking_delta") in kinds
    assert ("content_block_delta", "signature_delta") in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == signature(final.content[0].thinking)
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_use_after_thinking_sends_the_signed_thinking_back(
    stack: Stack, upstream: MockUpstream, streamed: bool
) -> None:
    sdk = client(stack)
    history = ask("What is the weather in Paris?")
    params: dict[str, Any] = {"model": "claude/claude-sonnet-4-5", "max_tokens": 2048, "thinking": THINKING,
                              "tools": [WEATHER]}
    first: anthropic.types.Message
    if streamed:
        async with sdk.messages.stream(messages=history, **params) as stream:
            first = await stream.get_final_message()
    else:
        first = await sdk.messages.create(messages=history, **params)
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    tool_use = first.content[1]
    assert tool_use.type == "tool_use"
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny"}]},
    ]
    # The mock refuses a missing or altered thinking block with a 400, as Anthropic does.
    final = await sdk.messages.create(messages=history, **params)
    assert final.stop_reason == "end_turn" and final.content[-1].type == "text"
    sent = upstream.stats["last_request"]["messages"][1]["content"][0]
    assert sent == first.content[0].model_dump(exclude_none=True)


async def test_redacted_thinking_survives_json_and_history(stack: Stack, upstream: MockUpstream) -> None:
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8"}
    upstream.script([{"body": {
        "id": "msg_redacted", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [redacted, {"type": "text", "text": "Done."}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 3}}}])
    message = await client(stack).messages.create(
        model="claude/claude-sonnet-4-5", max_tokens=2048, thinking=THINKING, messages=ask("Hidden thoughts"))
    assert message.content[0].model_dump() == redacted
    history = [*ask("Hidden thoughts"),
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
               *ask("And then?")]
    await client(stack).messages.create(model="claude/claude-sonnet-4-5", max_tokens=2048, thinking=THINKING,
                                        messages=history)
    assert upstream.stats["last_request"]["messages"][1]["content"][0] == redacted


@pytest.mark.parametrize("streamed", [False, True])
async def test_thinking_with_an_openai_upstream_is_mapped_not_refused(
    stack: Stack, upstream: MockUpstream, streamed: bool
) -> None:
    sdk = client(stack)
    params: dict[str, Any] = {"max_tokens": 2048, "thinking": THINKING, "tools": [WEATHER],
                              "messages": ask("What is the weather in Lyon?")}
    if streamed:
        async with sdk.messages.stream(model="up/gpt-5", **params) as stream:
            message = await stream.get_final_message()
    else:
        message = await sdk.messages.create(model="up/gpt-5", **params)
    assert [b.type for b in message.content] == ["tool_use"]
    body = upstream.stats["last_request"]
    assert body["reasoning_effort"] == "low"  # a 1,024-token budget, for a reasoning model
    assert "thinking" not in body and "anthropic" not in body
    await sdk.messages.create(model="up/gpt-4o-mini", **params)  # not a reasoning model: nothing mapped
    assert "reasoning_effort" not in upstream.stats["last_request"]


BEDROCK_CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.mark.parametrize("streamed", [False, True])
async def test_claude_on_bedrock_gets_anthropic_s_body_through_invoke_model(
    stack: Stack, upstream: MockUpstream, streamed: bool
) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=stack.url, api_key="anything", max_retries=0,
                                   default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    system = [{"type": "text", "text": f"Cached {uuid.uuid4()}", "cache_control": {"type": "ephemeral"}}]
    params: dict[str, Any] = {"model": f"bedrock/{BEDROCK_CLAUDE}", "max_tokens": 2048, "thinking": THINKING,
                              "system": system, "tools": [WEATHER], "messages": ask("What is the weather in Nice?")}
    if streamed:
        async with sdk.messages.stream(**params) as stream:
            message = await stream.get_final_message()
    else:
        message = await sdk.messages.create(**params)
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.usage.cache_creation_input_tokens and message.usage.cache_creation_input_tokens > 0
    operation = "invoke-with-response-stream" if streamed else "invoke"
    assert upstream.stats["last_url"] == f"/model/{BEDROCK_CLAUDE}/{operation}"
    sent = upstream.stats["last_request"]
    assert sent["anthropic_version"] == "bedrock-2023-05-31"
    assert sent["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert (sent["thinking"], sent["system"]) == (THINKING, system) and "model" not in sent and "stream" not in sent
    assert upstream.stats["last_headers"]["authorization"] == "Bearer bedrock-api-key"
    # An OpenAI client of the same model still gets Converse.
    async with httpx.AsyncClient(base_url=stack.url) as http:
        response = await http.post("/v1/chat/completions", json={
            "model": f"bedrock/{BEDROCK_CLAUDE}", "messages": [{"role": "user", "content": "Converse"}]})
    assert response.status_code == 200 and upstream.stats["last_url"].endswith("/converse")


# --- prompt caching ---------------------------------------------------------------------------------------


async def test_prompt_caching_usage_and_cost_follow_the_pricing_table(stack: Stack, upstream: MockUpstream) -> None:
    system = [{"type": "text", "text": f"A long stable system prompt {uuid.uuid4()}.",
               "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
    sdk = client(stack)
    price = table().price("claude-sonnet-4-5")
    assert price is not None and price.cached_input is not None
    costs, usages = [], []
    for _ in range(2):  # identical requests: the second still reaches the provider (no answer from our cache)
        raw = await sdk.messages.with_raw_response.create(
            model="claude/claude-sonnet-4-5", max_tokens=100, system=system, messages=ask("Hello there"))
        usages.append((await raw.parse()).usage)
        costs.append(float(raw.headers["x-llm-edge-cost-usd"]))
        assert raw.headers["x-llm-edge-cache"] == "miss"
    assert upstream.stats["calls"] == 2
    assert upstream.stats["last_request"]["system"] == system  # the breakpoint and its ttl, as sent
    written, read = usages
    assert written.cache_creation_input_tokens is not None and written.cache_creation_input_tokens > 0
    assert written.cache_read_input_tokens == 0
    assert read.cache_read_input_tokens == written.cache_creation_input_tokens and read.cache_creation_input_tokens == 0
    for usage, cost in zip(usages, costs, strict=True):
        expected = PER_TOKEN * (usage.input_tokens * price.input
                                + (usage.cache_creation_input_tokens or 0) * price.cache_write_price
                                + (usage.cache_read_input_tokens or 0) * price.cached_input
                                + usage.output_tokens * price.output)
        assert cost == pytest.approx(expected, abs=1e-8)
    assert price.cache_write_price == 3.75 and costs[1] < costs[0]


async def test_a_request_without_cache_control_is_still_served_from_our_cache(
    stack: Stack, upstream: MockUpstream
) -> None:
    sdk = client(stack)
    prompt = ask(f"Cache me {uuid.uuid4()}")
    await sdk.messages.create(model="claude/claude-sonnet-4-5", max_tokens=100, messages=prompt)
    raw = await sdk.messages.with_raw_response.create(model="claude/claude-sonnet-4-5", max_tokens=100,
                                                      messages=prompt)
    assert raw.headers["x-llm-edge-cache"] != "miss" and upstream.stats["calls"] == 1


# --- count_tokens -----------------------------------------------------------------------------------------


async def test_count_tokens_is_anthropic_s_own_count_for_an_anthropic_target(
    stack: Stack, upstream: MockUpstream
) -> None:
    raw = await client(stack).messages.with_raw_response.count_tokens(
        model="claude/claude-sonnet-4-5", system="Be brief.", messages=ask("one two three four"),
        thinking=THINKING, tools=[WEATHER])
    count = await raw.parse()
    assert count.input_tokens == 2 + 4  # the mock counts words, as its answers' usage does
    assert "x-llm-edge-estimate" not in raw.headers
    assert upstream.stats["last_url"] == "/v1/messages/count_tokens"
    assert upstream.stats["last_request"]["model"] == "claude-sonnet-4-5"
    assert upstream.stats["last_request"]["thinking"] == THINKING


async def test_count_tokens_is_estimated_with_openai_s_encoding_elsewhere(stack: Stack, upstream: MockUpstream) -> None:
    text = "Counting tokens through a gateway is an estimate for OpenAI models."
    raw = await client(stack).messages.with_raw_response.count_tokens(model="up/gpt-4o-mini", messages=ask(text))
    count = await raw.parse()
    encoding = bpe_openai.get_encoding("o200k_base")
    # OpenAI's chat format: 3 tokens per message around its role and content, 3 to prime the answer.
    assert count.input_tokens == 3 + 3 + len(encoding.encode("user")) + len(encoding.encode(text))
    assert raw.headers["x-llm-edge-estimate"] == "true" and raw.headers["x-llm-edge-provider"] == "up"
    assert upstream.stats["calls"] == 0


async def test_count_tokens_errors_speak_anthropic(stack: Stack) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await client(stack).messages.count_tokens(model="no-such-model", messages=ask("x"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client(stack).messages.count_tokens(model="claude/claude-sonnet-4-5", messages=[])
    assert bad.value.body["type"] == "error"  # type: ignore[index]


# --- headers and paths ------------------------------------------------------------------------------------


async def test_betas_and_version_are_forwarded_through_the_allow_list(stack: Stack, upstream: MockUpstream) -> None:
    betas = "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    sdk = anthropic.AsyncAnthropic(base_url=stack.url, api_key="anything", max_retries=0,
                                   default_headers={"anthropic-beta": betas, "anthropic-version": "2023-06-01"})
    await sdk.beta.messages.create(model="claude/claude-sonnet-4-5", max_tokens=100, messages=ask("beta"),
                                   context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
                                   extra_query={"beta": "true"})  # as Claude Code calls it
    sent = upstream.stats
    assert sent["last_url"] == "/v1/messages?beta=true"
    assert sent["last_headers"]["anthropic-beta"] == betas
    assert sent["last_headers"]["anthropic-version"] == "2023-06-01"
    assert sent["last_request"]["context_management"] == {"edits": [{"type": "clear_tool_uses_20250919"}]}
    await sdk.messages.create(model="strict/claude-sonnet-4-5", max_tokens=100, messages=ask("strict"))
    assert upstream.stats["last_headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"


@pytest.mark.parametrize(("method", "path", "status", "kind"), [
    ("POST", "/v1/messages/batches/nope", 404, "not_found_error"),
    ("GET", "/v1/messages", 405, "invalid_request_error"),
    ("GET", "/v1/messages/count_tokens", 405, "invalid_request_error"),
])
async def test_every_messages_path_answers_in_anthropic_s_error_shape(
    stack: Stack, method: str, path: str, status: int, kind: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        response = await http.request(method, path, json={})
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]


async def test_openai_answers_translated_from_anthropic_follow_openai_s_schema(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        response = await http.post("/v1/chat/completions", json={
            "model": "claude/claude-sonnet-4-5", "messages": [{"role": "user", "content": "Schema"}]})
    body = response.json()
    message = body["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None
    assert "system_fingerprint" not in body  # a string when known, absent otherwise: never null
    assert body["usage"].get("completion_tokens_details", {}) is not None
    assert "cache_creation_tokens" not in body["usage"]
