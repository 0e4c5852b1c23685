"""The OpenAI adapter's streaming: the stream request body, and documented and recorded SSE transcripts
(tests/fixtures/openai/stream_*.txt) fed through the SSE decoder and the chunk parser."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.providers.base import Delta, StreamParser, StreamSummary
from services.providers.openai.adapter import adapter, openai_compatible
from services.providers.openai.settings import OpenAISettings
from services.providers.sse import SSEDecoder
from shared.errors import (
    ContextWindowExceeded,
    GatewayError,
    NotFound,
    ProviderError,
    RateLimited,
)
from shared.messages import ChatRequest, CompletionTokensDetails, FunctionCallDelta, ToolCallDelta, Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai"
KEY = OpenAISettings(api_key="sk-test")
HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(body: dict[str, Any]) -> ChatRequest:
    return msgspec.json.decode(json.dumps(body).encode(), type=ChatRequest)


@dataclass
class Call:
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Stream:
    """What a client would put together from the deltas."""

    deltas: list[Delta] = field(default_factory=list)
    text: dict[int, str] = field(default_factory=dict)
    calls: dict[int, dict[int, Call]] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)

    def add(self, delta: Delta) -> None:
        self.deltas.append(delta)
        if delta.content is not None:
            self.text[delta.index] = self.text.get(delta.index, "") + delta.content
        for part in delta.tool_calls or ():
            call = self.calls.setdefault(delta.index, {}).setdefault(part.index, Call())
            call.id += part.id if isinstance(part.id, str) else ""
            call.type += part.type if isinstance(part.type, str) else ""
            if isinstance(part.function, FunctionCallDelta):
                call.name += part.function.name if isinstance(part.function.name, str) else ""
                call.arguments += part.function.arguments if isinstance(part.function.arguments, str) else ""
        if delta.finish_reason is not None:
            self.finish[delta.index] = delta.finish_reason


def feed(wire: bytes, parser: StreamParser, chunk_size: int | None = None) -> Stream:
    decoder, stream = SSEDecoder(), Stream()
    step = chunk_size or len(wire) or 1
    for i in range(0, len(wire), step):
        for event, data in decoder.feed(wire[i : i + step]):
            for delta in parser.feed(event, data):
                stream.add(delta)
    return stream


def run(wire: bytes, chunk_size: int | None = None) -> tuple[Stream, StreamSummary]:
    parser = adapter.stream_parser(provider="openai", model="gpt-4o")
    stream = feed(wire, parser, chunk_size)
    return stream, parser.end()


# --- build_stream_request ------------------------------------------------------------------------


def test_stream_request_asks_for_a_stream_with_usage() -> None:
    call = adapter.build_stream_request(request(HELLO), "gpt-4o-2024-08-06", KEY)
    plain = adapter.build_request(request(HELLO), "gpt-4o-2024-08-06", KEY)
    assert (call.method, call.url, call.headers, call.secret_headers) == (
        plain.method,
        plain.url,
        plain.headers,
        plain.secret_headers,
    )
    assert json.loads(call.body) == {
        **HELLO,
        "model": "gpt-4o-2024-08-06",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_stream_request_asks_for_usage_whatever_the_client_sent() -> None:
    body = {**HELLO, "stream": False, "stream_options": {"include_usage": False}, "temperature": 0.2}
    call = adapter.build_stream_request(request(body), "gpt-4o", KEY)
    assert json.loads(call.body) == {
        **HELLO,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_stream_request_keeps_extras_but_they_cannot_switch_streaming_off() -> None:
    extras = json.dumps({"stream": False, "stream_options": None, "top_k": 5}).encode()
    call = openai_compatible.build_stream_request(
        msgspec.structs.replace(request(HELLO), extra_json=extras), "llama", OpenAISettings()
    )
    assert call.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert json.loads(call.body) == {
        **HELLO,
        "model": "llama",
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 5,
    }


# --- documented and recorded transcripts ---------------------------------------------------------


def test_documented_stream() -> None:
    stream, summary = run(fixture("stream_documented.txt"))
    assert stream.deltas == [
        Delta(index=0, role="assistant", content=""),
        Delta(index=0, content="Hello"),
        Delta(index=0, finish_reason="stop"),
    ]
    assert summary == StreamSummary(
        id="chatcmpl-123", model="gpt-4o-mini", created=1694268190, finish_reason="stop", usage=None
    )


RECORDED_TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
    "I recommend checking a reliable weather website or a weather app."
)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 100])
def test_recorded_text_stream_with_usage(chunk_size: int | None) -> None:
    stream, summary = run(fixture("stream_text.txt"), chunk_size)
    assert stream.text == {0: RECORDED_TEXT}
    assert stream.deltas[0].role == "assistant"
    assert all(d.role is None for d in stream.deltas[1:])
    assert stream.finish == {0: "stop"}
    assert stream.deltas[-1] == Delta(index=0, finish_reason="stop")
    assert summary == StreamSummary(
        id="chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL",
        model="gpt-4o-2024-08-06",
        created=1727346168,
        finish_reason="stop",
        usage=Usage(
            prompt_tokens=14,
            completion_tokens=30,
            total_tokens=44,
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=0),
        ),
    )


def test_recorded_tool_call_stream() -> None:
    stream, summary = run(fixture("stream_tool_call.txt"))
    assert stream.deltas[0] == Delta(
        index=0,
        role="assistant",
        tool_calls=[
            ToolCallDelta(
                index=0,
                id="call_4XzlGBLtUe9dy3GVNV4jhq7h",
                type="function",
                function=FunctionCallDelta(name="get_weather", arguments=""),
            )
        ],
    )
    assert stream.deltas[1].tool_calls == [
        ToolCallDelta(index=0, function=FunctionCallDelta(arguments='{"'))
    ]  # later parts carry neither id, type nor name
    assert stream.text == {}
    (call,) = stream.calls[0].values()
    assert (call.id, call.type, call.name) == ("call_4XzlGBLtUe9dy3GVNV4jhq7h", "function", "get_weather")
    assert json.loads(call.arguments) == {"city": "New York City"}
    assert stream.finish == {0: "tool_calls"}
    assert summary.finish_reason == "tool_calls"
    assert summary.usage is not None
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens, summary.usage.total_tokens) == (
        44,
        16,
        60,
    )


def test_recorded_parallel_tool_calls_stream() -> None:
    stream, summary = run(fixture("stream_parallel_tool_calls.txt"), chunk_size=13)
    calls = stream.calls[0]
    assert sorted(calls) == [0, 1]
    assert (calls[0].id, calls[0].name) == ("call_JMW1whyEaYG438VE1OIflxA2", "GetWeatherArgs")
    assert json.loads(calls[0].arguments) == {"city": "Edinburgh", "country": "GB", "units": "c"}
    assert (calls[1].id, calls[1].name) == ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price")
    assert json.loads(calls[1].arguments) == {"ticker": "AAPL", "exchange": "NASDAQ"}
    assert stream.deltas[0] == Delta(index=0, role="assistant")
    assert summary.finish_reason == "tool_calls"
    assert summary.usage is not None and summary.usage.total_tokens == 209


# --- truncation ----------------------------------------------------------------------------------

DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("name", ["stream_documented.txt", "stream_text.txt", "stream_tool_call.txt"])
def test_a_stream_cut_before_done_is_truncated(name: str) -> None:
    wire = fixture(name)
    assert wire.endswith(DONE)
    for cut in (wire[: -len(DONE)], wire[: len(wire) // 2], b""):
        parser = adapter.stream_parser(provider="openai", model="gpt-4o")
        feed(cut, parser)
        with pytest.raises(ProviderError) as caught:
            parser.end()
        error = caught.value
        assert (error.code, error.is_retryable, error.where) == (
            "provider_stream_truncated",
            False,
            "provider:openai",
        )


def test_done_needs_its_blank_line() -> None:
    wire = fixture("stream_documented.txt")
    parser = adapter.stream_parser(provider="openai", model="gpt-4o")
    feed(wire[:-1], parser)  # "data: [DONE]\n": the event never completed
    with pytest.raises(ProviderError, match="DONE"):
        parser.end()


def test_anything_after_done_is_ignored() -> None:
    stream, summary = run(
        fixture("stream_documented.txt") + b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
    )
    assert stream.text == {0: "Hello"}
    assert summary.finish_reason == "stop"


# --- choices, compatible servers, malformed chunks -----------------------------------------------


def chunk(**fields: Any) -> bytes:
    return b"data: " + json.dumps({"id": "c1", "created": 1, "model": "m", **fields}).encode() + b"\n\n"


def test_choices_keep_their_index_and_the_summary_takes_choice_0s_finish_reason() -> None:
    wire = (
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": None}])
        + chunk(choices=[{"index": 1, "delta": {"role": "assistant", "content": "b"}, "finish_reason": None}])
        + chunk(choices=[{"index": 1, "delta": {}, "finish_reason": "length"}])
        + chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        + DONE
    )
    stream, summary = run(wire)
    assert stream.text == {0: "a", 1: "b"}
    assert stream.finish == {0: "stop", 1: "length"}
    assert summary.finish_reason == "stop"


def test_a_minimal_compatible_server_stream() -> None:
    wire = b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n' + DONE
    stream, summary = run(wire)
    assert stream.deltas == [Delta(index=0, content="hi")]
    assert summary.id.startswith("chatcmpl-") and summary.model == "gpt-4o" and summary.created > 0
    assert (summary.finish_reason, summary.usage) == (None, None)


def test_chunks_with_nothing_for_the_client_give_no_delta() -> None:
    wire = (
        chunk(choices=[{"index": 0, "delta": {"refusal": "no"}, "finish_reason": None}])
        + chunk(choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": None}])
        + chunk(choices=[{"index": 0, "finish_reason": None}])
        + chunk(choices=[], usage=None)
        + DONE
    )
    stream, _ = run(wire)
    assert stream.deltas == []


@pytest.mark.parametrize("data", [b"not json", b'{"choices": "many"}', b"[1, 2]"])
def test_a_malformed_chunk_is_a_provider_error(data: bytes) -> None:
    parser = adapter.stream_parser(provider="openai", model="gpt-4o")
    with pytest.raises(ProviderError) as caught:
        feed(b"data: " + data + b"\n\n", parser)
    assert caught.value.code == "provider_bad_response"


# --- errors inside the stream --------------------------------------------------------------------


def in_stream(name: str) -> bytes:
    """An error fixture as it arrives inside a 200 stream: one compact `data:` line after some text."""
    error = json.dumps(json.loads(fixture(name)), separators=(",", ":")).encode()
    return chunk(choices=[{"index": 0, "delta": {"content": "Hi"}}]) + b"data: " + error + b"\n\n"


@pytest.mark.parametrize(
    ("name", "cls", "status", "code", "retryable"),
    [
        ("error_server.json", ProviderError, 502, "provider_error", True),
        ("error_rate_limit.json", RateLimited, 429, "rate_limit_exceeded", True),
        ("error_insufficient_quota.json", RateLimited, 429, "insufficient_quota", False),
        ("error_context_length.json", ContextWindowExceeded, 400, "context_length_exceeded", False),
        ("error_model_not_found.json", NotFound, 404, "model_not_found", False),
    ],
)
def test_an_error_in_the_stream_raises_the_mapped_error(
    name: str, cls: type[GatewayError], status: int, code: str, retryable: bool
) -> None:
    parser = adapter.stream_parser(provider="openai", model="gpt-4o")
    with pytest.raises(GatewayError) as caught:
        feed(in_stream(name), parser)
    error = caught.value
    assert type(error) is cls
    assert (error.http_status, error.code, error.is_retryable) == (status, code, retryable)
    assert error.message == "openai: " + json.loads(fixture(name))["error"]["message"]
    assert error.where == "provider:openai"


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b'{"error": {"message": "bad input", "code": 400, "type": "BadRequestError"}}', 400, "bad input"),
        (b'{"error": {"message": "boom", "code": 42}}', 502, "boom"),
        (b'{"error": "model overloaded"}', 502, "model overloaded"),
        (b'{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}', 429, "slow down"),
    ],
)
def test_compatible_servers_error_shapes_in_the_stream(data: bytes, status: int, message: str) -> None:
    parser = adapter.stream_parser(provider="vllm", model="llama")
    with pytest.raises(GatewayError) as caught:
        feed(b"data: " + data + b"\n\n", parser)
    assert (caught.value.http_status, caught.value.message) == (status, f"vllm: {message}")


def test_an_error_event_is_an_error_even_without_an_error_field() -> None:
    parser = adapter.stream_parser(provider="openai", model="gpt-4o")
    with pytest.raises(ProviderError) as caught:
        feed(b'event: error\ndata: {"message": "stream failed"}\n\n', parser)
    assert caught.value.message == "openai: stream failed"
