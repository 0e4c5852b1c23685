"""Bedrock's ConverseStream: event transcripts (tests/fixtures/bedrock/stream_*.json, each event framed
into AWS's binary event stream by the mock upstream's encoder) through the adapter's decoder and parser,
whole and split byte by byte; truncation and in-stream exceptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.providers.base import Delta, StreamParser, StreamSummary
from services.providers.bedrock.adapter import adapter
from shared.errors import GatewayError, InvalidRequest, ProviderError, RateLimited, Unavailable
from shared.messages import FunctionCallDelta
from tests.mockupstream.bedrock import event, exception
from tests.unit import adapter_io

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bedrock"


def wire(name: str) -> bytes:
    return b"".join(event(kind, payload) for kind, payload in json.loads((FIXTURES / name).read_bytes()))


def feed(data: bytes, step: int | None = None) -> tuple[StreamParser, list[Delta]]:
    return adapter_io.feed(adapter, data, step, provider="bedrock", model="m")


def run(data: bytes, step: int | None = None) -> tuple[list[Delta], StreamSummary]:
    return adapter_io.run(adapter, data, step, provider="bedrock", model="m")


@pytest.mark.parametrize("step", [None, 1, 13])
def test_text_stream_with_usage_from_the_metadata_event(step: int | None) -> None:
    deltas, summary = run(wire("stream_text.json"), step)
    assert "".join(d.content or "" for d in deltas) == "Hello! How can I help you today?"
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert deltas[-1].finish_reason == "stop" and summary.finish_reason == "stop"
    assert summary.usage is not None
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens, summary.usage.total_tokens) == (
        8,
        12,
        20,
    )


def test_tool_use_is_numbered_among_tool_calls_and_its_input_streams_as_arguments() -> None:
    deltas, summary = run(wire("stream_tool_use.json"))
    assert "".join(d.content or "" for d in deltas) == "Let me look that up."
    parts = [part for d in deltas for part in d.tool_calls or ()]
    assert {p.index for p in parts} == {0}
    assert parts[0].id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert isinstance(parts[0].function, FunctionCallDelta) and parts[0].function.name == "top_song"
    arguments = "".join(
        p.function.arguments
        for p in parts
        if isinstance(p.function, FunctionCallDelta) and isinstance(p.function.arguments, str)
    )
    assert json.loads(arguments) == {"sign": "WZPZ"}
    assert summary.finish_reason == "tool_calls"


def test_a_stream_without_message_stop_was_truncated() -> None:
    events = json.loads((FIXTURES / "stream_text.json").read_bytes())[:3]
    with pytest.raises(ProviderError) as caught:
        run(b"".join(event(kind, payload) for kind, payload in events))
    assert caught.value.code == "provider_stream_truncated"


def test_a_message_cut_inside_its_frame_is_never_half_delivered() -> None:
    data = wire("stream_text.json")
    parser, deltas = feed(data[: len(data) - 5])  # the metadata event lacks its last bytes
    assert "".join(d.content or "" for d in deltas) == "Hello! How can I help you today?"
    summary = parser.end()
    assert summary.usage is None  # messageStop arrived: the answer is whole, its usage unknown


@pytest.mark.parametrize(
    ("kind", "cls", "status", "code"),
    [
        ("throttlingException", RateLimited, 429, "ThrottlingException"),  # documented 429
        ("validationException", InvalidRequest, 400, "ValidationException"),  # documented 400
        ("modelStreamErrorException", ProviderError, 502, "provider_status_424"),  # documented 424
        ("internalServerException", ProviderError, 502, "provider_error"),  # documented 500
        ("serviceUnavailableException", Unavailable, 503, "provider_overloaded"),  # documented 503
    ],
)
def test_an_exception_in_the_stream_is_the_error_of_its_documented_status(
    kind: str, cls: type[GatewayError], status: int, code: str
) -> None:
    data = event("messageStart", {"role": "assistant"}) + exception(kind, "Something went wrong upstream.")
    with pytest.raises(cls) as caught:
        run(data)
    assert (caught.value.http_status, caught.value.code) == (status, code)
    assert caught.value.message == "bedrock: Something went wrong upstream."
