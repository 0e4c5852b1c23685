"""The Anthropic adapter's streaming: the stream request body, and recorded and documented event streams
(tests/fixtures/anthropic/stream_*.txt) fed through the SSE decoder and the event parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.providers.anthropic.adapter import adapter
from services.providers.anthropic.settings import AnthropicSettings
from services.providers.base import Delta, StreamSummary
from shared.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    Unavailable,
)
from shared.messages import ChatRequest, FunctionCallDelta, PromptTokensDetails, ToolCallDelta, Usage
from tests.unit import adapter_io

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
KEY = AnthropicSettings(api_key="sk-ant-test")
MODEL = "claude-sonnet-4-5"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(body: dict[str, Any]) -> ChatRequest:
    return msgspec.json.decode(json.dumps(body).encode(), type=ChatRequest)


def feed(wire: bytes, chunk_size: int | None = None, parser: Any = None) -> tuple[Any, list[Delta]]:
    return adapter_io.feed(adapter, wire, chunk_size, provider="anthropic", model=MODEL, parser=parser)


def run(wire: bytes, chunk_size: int | None = None) -> tuple[list[Delta], StreamSummary]:
    return adapter_io.run(adapter, wire, chunk_size, provider="anthropic", model=MODEL)


def text(deltas: list[Delta]) -> str:
    return "".join(d.content or "" for d in deltas)


def tool_calls(deltas: list[Delta]) -> dict[int, dict[str, str]]:
    """The tool calls a client assembles from the deltas, by their index."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for part in delta.tool_calls or ():
            call = calls.setdefault(part.index, {"id": "", "type": "", "name": "", "arguments": ""})
            for key, value in (("id", part.id), ("type", part.type)):
                call[key] += value if isinstance(value, str) else ""
            if isinstance(part.function, FunctionCallDelta):
                for key, value in (("name", part.function.name), ("arguments", part.function.arguments)):
                    call[key] += value if isinstance(value, str) else ""
    return calls


HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}

# --- build_stream_request ------------------------------------------------------------------------


def test_stream_request_is_the_messages_call_with_stream_true() -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 100}
    call = adapter.build_stream_request(request(body), MODEL, KEY)
    plain = adapter.build_request(request(body), MODEL, KEY)
    assert (call.method, call.url, call.headers, call.secret_headers) == (
        plain.method,
        plain.url,
        plain.headers,
        plain.secret_headers,
    )
    assert json.loads(plain.body) == {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}],
    }
    assert json.loads(call.body) == {**json.loads(plain.body), "stream": True}


def test_stream_request_refuses_what_the_plain_one_refuses() -> None:
    with pytest.raises(InvalidRequest):
        adapter.build_stream_request(request({**HELLO, "n": 2}), MODEL, KEY)


# --- recorded transcripts ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 64])
def test_recorded_text_stream(chunk_size: int | None) -> None:
    deltas, summary = run(fixture("stream_text.txt"), chunk_size)
    assert deltas == [
        Delta(role="assistant", content="Hello"),
        Delta(content=" there"),
        Delta(content="!"),
        Delta(finish_reason="stop"),
    ]
    assert summary.id == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
    assert summary.model == "claude-3-opus-latest"
    assert summary.finish_reason == "stop"
    assert summary.created > 0
    assert summary.usage == Usage(
        prompt_tokens=11,
        completion_tokens=6,
        total_tokens=17,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=0),
    )


def test_recorded_tool_use_stream() -> None:
    deltas, summary = run(fixture("stream_tool_use.txt"))
    assert deltas[0] == Delta(role="assistant", content="I")
    assert all(d.role is None for d in deltas[1:])
    assert text(deltas) == "I'll check the current weather in Paris for you."
    start = ToolCallDelta(
        index=0,
        id="toolu_01NRLabsLyVHZPKxbKvkfSMn",
        type="function",
        function=FunctionCallDelta(name="get_weather", arguments=""),
    )
    assert Delta(tool_calls=[start]) in deltas
    calls = tool_calls(deltas)
    assert list(calls) == [0]  # the tool's block is the second block but the first tool call
    assert (calls[0]["id"], calls[0]["type"], calls[0]["name"]) == (
        "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "function",
        "get_weather",
    )
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    assert deltas[-1] == Delta(finish_reason="tool_calls")
    assert summary.finish_reason == "tool_calls"
    assert summary.usage is not None
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens, summary.usage.total_tokens) == (
        377,
        65,
        442,
    )


# --- truncation ----------------------------------------------------------------------------------

STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize("name", ["stream_text.txt", "stream_tool_use.txt"])
def test_a_stream_cut_before_message_stop_is_truncated(name: str) -> None:
    wire = fixture(name)
    assert wire.endswith(STOP)
    for cut in (wire[: -len(STOP)], wire[:-1], wire[: len(wire) // 2], b""):
        parser, _ = feed(cut)
        with pytest.raises(ProviderError) as caught:
            parser.end()
        error = caught.value
        assert (error.code, error.is_retryable, error.where) == (
            "provider_stream_truncated",
            False,
            "provider:anthropic",
        )


# --- errors inside the stream --------------------------------------------------------------------


def test_documented_overloaded_error_event_is_what_a_529_would_be() -> None:
    parser, deltas = feed(fixture("stream_text.txt").split(b"event: content_block_delta")[0])
    assert deltas == []  # nothing reached the client yet: the router may still fail over
    with pytest.raises(Unavailable) as caught:
        feed(fixture("stream_error_overloaded.txt"), parser=parser)
    from_status = adapter.parse_error(529, fixture("error_overloaded.json"), {}, provider="anthropic")
    error = caught.value
    assert (error.http_status, error.code, error.is_retryable, error.message) == (
        from_status.http_status,
        from_status.code,
        from_status.is_retryable,
        from_status.message,
    )
    assert (error.http_status, error.code, error.message) == (
        503,
        "provider_overloaded",
        "anthropic: Overloaded",
    )


@pytest.mark.parametrize(
    ("name", "status", "cls", "client_status"),
    [
        ("error_invalid_request.json", 400, InvalidRequest, 400),
        ("error_authentication.json", 401, ProviderError, 502),
        ("error_not_found.json", 404, NotFound, 404),
        ("error_rate_limit.json", 429, RateLimited, 429),
        ("error_api_error.json", 500, ProviderError, 502),
        ("error_overloaded.json", 529, Unavailable, 503),
    ],
)
def test_error_events_map_like_their_status(
    name: str, status: int, cls: type[GatewayError], client_status: int
) -> None:
    data = json.dumps(json.loads(fixture(name)))
    parser = adapter.stream_parser(provider="anthropic", model=MODEL)
    parser.feed("message_start", '{"type":"message_start","message":{"id":"msg_1","usage":{}}}')
    with pytest.raises(GatewayError) as caught:
        parser.feed("error", data)
    expected = adapter.parse_error(status, fixture(name), {}, provider="anthropic")
    error = caught.value
    assert type(error) is cls is type(expected)
    assert error.http_status == client_status
    assert (error.code, error.message, error.is_retryable) == (
        expected.code,
        expected.message,
        expected.is_retryable,
    )


@pytest.mark.parametrize(
    ("error_type", "cls", "client_status"),
    [
        ("request_too_large", BodyTooLarge, 413),
        ("timeout_error", ProviderError, 502),
        ("new_error", ProviderError, 502),
    ],
)
def test_other_error_types(error_type: str, cls: type[GatewayError], client_status: int) -> None:
    parser = adapter.stream_parser(provider="anthropic", model=MODEL)
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": "m"}})
    with pytest.raises(GatewayError) as caught:
        parser.feed("error", data)
    assert (type(caught.value), caught.value.http_status) == (cls, client_status)


# --- the events one by one -----------------------------------------------------------------------


def events(*items: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps({'type': name, **body})}\n\n".encode() for name, body in items
    )


START = ("message_start", {"message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}})
STOPPED: tuple[str, dict[str, Any]] = ("message_stop", {})


def block_start(index: int, **block: Any) -> tuple[str, dict[str, Any]]:
    return ("content_block_start", {"index": index, "content_block": block})


def block_delta(index: int, **delta: Any) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"index": index, "delta": delta})


def message_delta(stop_reason: str | None, **usage: int) -> tuple[str, dict[str, Any]]:
    return ("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage})


def test_two_tool_calls_after_thinking_are_numbered_among_tool_calls() -> None:
    wire = events(
        START,
        block_start(0, type="thinking", thinking="", signature=""),
        block_delta(0, type="thinking_delta", thinking="Let me think"),
        block_delta(0, type="signature_delta", signature="EqQB..."),
        ("content_block_stop", {"index": 0}),
        block_start(1, type="tool_use", id="toolu_a", name="get_weather", input={}),
        block_delta(1, type="input_json_delta", partial_json=""),
        block_start(2, type="server_tool_use", id="srvtoolu_b", name="web_search", input={}),
        block_delta(2, type="input_json_delta", partial_json='{"query": "x"}'),
        block_start(3, type="tool_use", id="toolu_c", name="get_time", input={}),
        block_delta(1, type="input_json_delta", partial_json='{"location": '),
        block_delta(3, type="input_json_delta", partial_json='{"tz": "UTC"}'),
        block_delta(1, type="input_json_delta", partial_json='"Paris"}'),
        ("ping", {}),
        message_delta("tool_use", output_tokens=40),
        STOPPED,
    )
    deltas, summary = run(wire)
    assert deltas[0].role == "assistant"
    assert text(deltas) == ""
    assert tool_calls(deltas) == {
        0: {"id": "toolu_a", "type": "function", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        1: {"id": "toolu_c", "type": "function", "name": "get_time", "arguments": '{"tz": "UTC"}'},
    }
    assert summary.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_like_the_non_streaming_ones(stop_reason: str | None, finish_reason: str) -> None:
    deltas, summary = run(events(START, message_delta(stop_reason, output_tokens=1), STOPPED))
    assert deltas == [Delta(role="assistant", finish_reason=finish_reason)]
    assert summary.finish_reason == finish_reason


def test_usage_counts_cached_prompt_tokens_and_takes_the_last_cumulative_counts() -> None:
    start = (
        "message_start",
        {
            "message": {
                "id": "msg_1",
                "model": "claude-x",
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                    "output_tokens": 1,
                },
            }
        },
    )
    wire = events(
        start,
        block_start(0, type="text", text=""),
        block_delta(0, type="text_delta", text="hi"),
        message_delta("end_turn", output_tokens=7),
        message_delta(None, input_tokens=12, output_tokens=9),
        STOPPED,
    )
    deltas, summary = run(wire)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]  # said once
    assert summary.usage == Usage(
        prompt_tokens=12 + 100 + 20,
        completion_tokens=9,
        total_tokens=141,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=100),
        cache_creation_tokens=20,
    )
    assert (summary.id, summary.model) == ("msg_1", "claude-x")


def test_a_text_block_that_starts_with_text_and_unknown_events() -> None:
    wire = events(
        START,
        ("brand_new_event", {"foo": 1}),
        block_start(0, type="text", text="Hel"),
        block_delta(0, type="text_delta", text="lo"),
        block_delta(0, type="citations_delta", citation={"type": "char_location"}),
        message_delta("end_turn"),
        STOPPED,
    )
    deltas, _ = run(wire)
    assert deltas[:2] == [Delta(role="assistant", content="Hel"), Delta(content="lo")]


def test_events_without_an_event_line_are_read_by_their_type() -> None:
    wire = events(START, block_delta(0, type="text_delta", text="x"), message_delta("end_turn"), STOPPED)
    deltas, summary = run(
        b"".join(line + b"\n" for line in wire.split(b"\n") if not line.startswith(b"event:"))
    )
    assert text(deltas) == "x" and summary.id == "msg_1"


def test_a_minimal_stream_is_filled_in() -> None:
    deltas, summary = run(events(STOPPED))
    assert deltas == []
    assert summary.id.startswith("msg_") and summary.model == MODEL
    assert summary.usage == Usage(prompt_tokens_details=PromptTokensDetails(cached_tokens=0))


@pytest.mark.parametrize("data", [b"not json", b'{"type": "content_block_delta", "index": "one"}', b"[]"])
def test_a_malformed_event_is_a_provider_error(data: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        feed(b"event: content_block_delta\ndata: " + data + b"\n\n")
    assert caught.value.code == "provider_bad_response"
