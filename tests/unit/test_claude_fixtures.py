"""Extended thinking, prompt caching and token counting as Anthropic documents them (tests/fixtures/anthropic):
through the Anthropic adapter into the unified types, and back out of the ingress as Anthropic's own JSON and
events; prices of cache writes and reads from the pricing table."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from services.ingress.anthropic_dialect import message_json
from services.ingress.anthropic_events import EventWriter, replay
from services.providers.anthropic.adapter import adapter
from services.providers.assemble import Assembler
from shared.messages import ChatResult, StreamChunk, StreamEnd, ThinkingBlock, Usage
from shared.pricing import PER_TOKEN, table
from tests.unit.adapter_io import fixture, run


def blocks(name: str) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = json.loads(fixture(name))["content"]
    return content


def parsed(name: str) -> ChatResult:
    return adapter.parse_response(fixture(name), provider="anthropic", model="claude-sonnet-4-5")


@pytest.mark.parametrize("name", ["anthropic/messages_response_thinking.json",
                                  "anthropic/messages_response_redacted_thinking.json"])
def test_documented_thinking_answers_come_back_to_a_messages_client_unchanged(name: str) -> None:
    result = parsed(name)
    thinking = result.choices[0].message.thinking
    assert isinstance(thinking, list) and thinking[0] == ThinkingBlock(
        thinking="Let me analyze this step by step...", signature=blocks(name)[0]["signature"])
    assert result.choices[0].message.content == "Based on my analysis..."
    assert json.loads(message_json(result))["content"] == blocks(name)


def test_a_cached_thinking_answer_replays_as_the_documented_events() -> None:
    events = [json.loads(line[6:]) for line in replay(parsed("anthropic/messages_response_redacted_thinking.json"))
              .decode().splitlines() if line.startswith("data: ")]
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "redacted_thinking", "text"]
    assert starts[1]["data"] == blocks("anthropic/messages_response_redacted_thinking.json")[1]["data"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas[0] == {"type": "thinking_delta", "thinking": "Let me analyze this step by step..."}
    assert deltas[1]["type"] == "signature_delta"


@pytest.mark.parametrize("step", [None, 7, 64])
def test_the_documented_thinking_stream_keeps_its_thinking_and_signature(step: int | None) -> None:
    wire = fixture("anthropic/stream_thinking.txt")
    deltas, summary = run(adapter, wire, step, provider="anthropic", model="claude-sonnet-4-5")
    thinking = "".join(d.thinking or "" for d in deltas)
    assert thinking == ("I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147"
                        "\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0\n\nSo GCD(1071, 462) = 21")
    assert [d.signature for d in deltas if d.signature] == ["EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."]
    assert "".join(d.content or "" for d in deltas) == "The greatest common divisor of 1071 and 462 is **21**."
    assert summary.finish_reason == "stop"
    # Assembled (what the cache stores), the thinking is one signed block before the text.
    assembler = Assembler()
    for delta in deltas:
        assembler.add(delta)
    message = assembler.result(id="x", created=0, model="m", usage=None, provider="p", target_model="m").choices[0]
    assert message.message.thinking == [ThinkingBlock(thinking=thinking, signature=deltas[-3].signature or "")]


def test_the_documented_thinking_stream_is_written_back_as_anthropic_events() -> None:
    deltas, _ = run(adapter, fixture("anthropic/stream_thinking.txt"), provider="anthropic", model="claude-sonnet-4-5")
    writer = EventWriter("msg_01", "claude-sonnet-4-5")
    out = b"".join(writer.chunk(StreamChunk(seq=i, content=d.content, thinking=d.thinking, signature=d.signature,
                                            redacted_thinking=d.redacted_thinking)) for i, d in enumerate(deltas))
    out += writer.end(StreamEnd(seq=len(deltas), id="msg_01", model="claude-sonnet-4-5", created=0,
                                finish_reason="stop", usage=Usage(), provider="anthropic",
                                target_model="claude-sonnet-4-5"))
    ours = [json.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: ")]
    theirs = [json.loads(line[6:]) for line in fixture("anthropic/stream_thinking.txt").decode().splitlines()
              if line.startswith("data: ")]

    def blocks_of(events: list[dict[str, Any]]) -> list[Any]:
        return [(e["type"], e.get("index"), e.get("content_block"), e.get("delta"))
                for e in events if e["type"].startswith("content_block")]

    assert blocks_of(ours) == blocks_of(theirs)


def test_documented_cache_usage_is_reported_and_priced_apart() -> None:
    name = "anthropic/messages_response_cache_usage.json"  # the docs' pre-warm answer: 5120 tokens written
    result = parsed(name)
    usage = result.usage
    assert (usage.prompt_tokens, usage.cache_creation_tokens, usage.cache_read_tokens,
            usage.completion_tokens) == (8 + 5120, 5120, 0, 0)
    documented, ours = json.loads(fixture(name)), json.loads(message_json(result))
    assert {k: v for k, v in ours.items() if k != "usage"} == {k: v for k, v in documented.items() if k != "usage"}
    # The four counts a Messages client reads come back as Anthropic sent them. (The `cache_creation`
    # split by TTL, `iterations`, `service_tier` and `inference_geo` are not relayed yet.)
    counts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    assert {k: ours["usage"][k] for k in counts} == {k: documented["usage"][k] for k in counts}
    price = table().price("claude-sonnet-4-5")
    assert price is not None and price.cache_write_price == 3.75  # 1.25 x $3.00: a 5-minute cache write
    assert table().cost("claude-sonnet-4-5", usage) == pytest.approx(PER_TOKEN * (8 * 3.00 + 5120 * 3.75))
    read = msgspec.structs.replace(usage, cache_creation_tokens=0, prompt_tokens_details=msgspec.structs.replace(
        usage.prompt_tokens_details, cached_tokens=5120) if usage.prompt_tokens_details else None)
    assert table().cost("claude-sonnet-4-5", read) == pytest.approx(PER_TOKEN * (8 * 3.00 + 5120 * 0.30))


def test_the_documented_token_count_is_read() -> None:
    count = adapter.parse_count(fixture("anthropic/count_tokens_response.json"), provider="claude",
                                model="claude-sonnet-4-5")
    assert (count.input_tokens, count.provider, count.estimated) == (14, "claude", False)


# --- server tools' blocks: Anthropic's, passed back to a Messages client as they came ---------------------


def sse_data(wire: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in wire.decode().splitlines() if line.startswith("data: ")]


def relayed(name: str) -> tuple[list[dict[str, Any]], ChatResult]:
    """A recorded stream through the Anthropic parser, then written back by the ingress; and what the cache
    would keep of it (the assembled answer)."""
    deltas, _ = run(adapter, fixture(name), 11, provider="anthropic", model="claude-sonnet-4-5")
    writer = EventWriter("msg_01", "claude-sonnet-4-5")
    frames = [StreamChunk(seq=i, content=d.content, tool_calls=d.tool_calls, thinking=d.thinking,
                          signature=d.signature, server_block=d.server_block, server_delta=d.server_delta)
              for i, d in enumerate(deltas)]
    out = b"".join(writer.chunk(f) for f in frames)
    out += writer.end(StreamEnd(seq=len(frames), id="msg_01", model="claude-sonnet-4-5", created=0,
                                finish_reason="stop", usage=Usage(), provider="p", target_model="m"))
    assembler = Assembler()
    for delta in deltas:
        assembler.add(delta)
    result = assembler.result(id="x", created=0, model="m", usage=None, provider="p", target_model="m")
    return sse_data(out), result


def blocks_in(events: list[dict[str, Any]]) -> list[Any]:
    return [(e["type"], e.get("content_block"), e.get("delta")) for e in events if e["type"].startswith("content_")]


@pytest.mark.parametrize("name", ["anthropic/stream_server_tool_result.txt", "anthropic/stream_server_tool_use.txt"])
def test_server_tool_blocks_stream_back_as_anthropic_sent_them(name: str) -> None:
    ours, _ = relayed(name)
    theirs = sse_data(fixture(name))
    # The same blocks in the same order, server tools' ones byte for byte (a tool_use's start is the
    # gateway's own: id, name and empty input; its `caller` is not kept).
    expected = [(t, {k: v for k, v in b.items() if k != "caller"} if b else b, d) for t, b, d in blocks_in(theirs)]
    assert [x for x in blocks_in(ours) if x[2] != {"type": "input_json_delta", "partial_json": ""}] == [
        x for x in expected if x[2] != {"type": "input_json_delta", "partial_json": ""}]


def test_a_streamed_server_tool_use_is_kept_whole_for_the_cache_and_its_replay() -> None:
    _, result = relayed("anthropic/stream_server_tool_use.txt")
    blocks = [json.loads(b) for b in result.choices[0].message.server_blocks or ()]
    assert blocks == [{"type": "server_tool_use", "id": "srvtoolu_01WebSearch", "name": "web_search",
                       "input": {"query": "weather in Paris"}}]
    replayed = [b for _, b, _ in blocks_in(sse_data(replay(result))) if b]
    assert replayed[0] == blocks[0] and replayed[1] == {"type": "text", "text": ""}


def test_a_recorded_answer_with_a_server_tool_comes_back_as_it_was() -> None:
    name = "anthropic/messages_response_server_tool_use.json"
    result = parsed(name)
    assert json.loads(message_json(result))["content"] == blocks(name)  # every block, in its order
    # What an OpenAI client or another dialect reads: the text and the client tool call.
    message = result.choices[0].message
    assert message.content and [c.function.name for c in message.tool_calls or ()]
    assert [json.loads(b)["type"] for b in message.server_blocks or ()] == ["server_tool_use"]
