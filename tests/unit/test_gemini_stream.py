"""The Gemini adapter's streaming: `streamGenerateContent?alt=sse` transcripts
(tests/fixtures/gemini/stream_*, CRLF-framed as Google sends them) through the adapter's decoder and parser,
whole and split byte by byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.providers.base import Delta, StreamSummary
from services.providers.gemini.adapter import adapter
from shared.errors import InvalidRequest, ProviderError, Unavailable
from shared.messages import FunctionCallDelta
from tests.unit import adapter_io

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gemini"


def run(wire: bytes, step: int | None = None) -> tuple[list[Delta], StreamSummary]:
    return adapter_io.run(adapter, wire, step, provider="gemini", model="gemini-x")


@pytest.mark.parametrize("step", [None, 1, 7])
def test_text_stream_in_any_chunking(step: int | None) -> None:
    deltas, summary = run((FIXTURES / "stream_text.txt").read_bytes(), step)
    assert "".join(d.content or "" for d in deltas) == "The quick brown fox jumps over the lazy dog.\n"
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert deltas[-1].finish_reason == "stop"
    assert (summary.id, summary.model, summary.finish_reason) == ("sse-example-1", "gemini-2.0-flash", "stop")
    assert summary.usage is not None
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens, summary.usage.total_tokens) == (
        9,
        10,
        19,
    )


def test_a_function_call_arrives_whole_as_one_tool_call_delta() -> None:
    deltas, summary = run((FIXTURES / "stream_function_call.txt").read_bytes())
    [call] = deltas[0].tool_calls or []
    assert call.index == 0 and call.type == "function" and isinstance(call.id, str) and call.id
    assert isinstance(call.function, FunctionCallDelta) and call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {
        "location": "Paris"
    }
    assert summary.finish_reason == "tool_calls" and deltas[-1].finish_reason == "tool_calls"


def test_a_stream_that_ends_without_a_finish_reason_was_truncated() -> None:
    with pytest.raises(ProviderError) as caught:
        run((FIXTURES / "stream_truncated.txt").read_bytes())
    assert caught.value.code == "provider_stream_truncated"


def test_an_error_event_in_the_stream_is_the_error_its_code_stands_for() -> None:
    with pytest.raises(Unavailable) as caught:
        run((FIXTURES / "stream_error.txt").read_bytes())
    assert caught.value.message == "gemini: The model is overloaded. Please try again later."
    assert caught.value.is_retryable


def test_a_blocked_prompt_in_the_stream_is_a_content_filter_error() -> None:
    wire = (
        b"data: "
        + (FIXTURES / "generate_response_blocked.json").read_bytes().replace(b"\n", b"")
        + b"\r\n\r\n"
    )
    with pytest.raises(InvalidRequest) as caught:
        run(wire)
    assert caught.value.code == "content_filter"


def test_two_candidates_keep_their_own_index_and_finish_reason() -> None:
    events = [
        {
            "candidates": [
                {"content": {"parts": [{"text": "A"}], "role": "model"}, "index": 0},
                {"content": {"parts": [{"text": "B"}], "role": "model"}, "index": 1},
            ]
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0},
                {"content": {"parts": [{"text": "?"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            ]
        },
    ]
    deltas, summary = run(b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events))
    text = {i: "".join(d.content or "" for d in deltas if d.index == i) for i in (0, 1)}
    assert text == {0: "A!", 1: "B?"}
    assert {d.index: d.finish_reason for d in deltas if d.finish_reason} == {0: "stop", 1: "length"}
    assert summary.finish_reason == "stop" and summary.usage is None
