"""The Anthropic Messages dialect at the edge, as pure functions: request bodies in, unified requests out;
unified answers and stream frames in, Anthropic's Message object, events and error bodies out. Round trips
through the provider-side adapter (`services/providers/anthropic*.py`) pin both directions to the same format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.ingress.anthropic_dialect import error_json, message_json, parse_messages_request
from services.ingress.anthropic_events import EventWriter, replay
from services.providers.anthropic.adapter import adapter
from services.providers.anthropic.settings import AnthropicSettings
from services.providers.base import Delta, StreamSummary
from services.providers.sse import SSEDecoder
from shared.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    Unavailable,
)
from shared.messages import (
    ChatResult,
    Choice,
    FunctionCall,
    ImagePart,
    Message,
    NamedFunction,
    PromptTokensDetails,
    ResponseMessage,
    StreamChunk,
    StreamEnd,
    TextPart,
    ToolCall,
    ToolChoiceFunction,
    Usage,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
WEATHER = {"name": "get_weather", "description": "Weather at a place",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                       "messages": [{"role": "user", "content": "Hello"}]} | fields).encode()


def events(wire: bytes) -> list[tuple[str, dict[str, Any]]]:
    decoder = SSEDecoder()
    return [(name or "", json.loads(data)) for name, data in decoder.feed(wire)]


# --- requests ----------------------------------------------------------------------------------------------


def test_a_plain_request_maps_field_by_field() -> None:
    chat = parse_messages_request(body(
        system="You are terse.", temperature=0.2, top_p=0.9, stop_sequences=["\n\nHuman:"], stream=True,
        metadata={"user_id": "u-7"}))
    assert chat.model == "claude-sonnet-4-5"
    assert chat.messages == [Message(role="system", content="You are terse."), Message(role="user", content="Hello")]
    assert (chat.max_tokens, chat.temperature, chat.top_p, chat.stop, chat.stream, chat.user) == (
        1024, 0.2, 0.9, ["\n\nHuman:"], True, "u-7")


def test_system_blocks_and_content_blocks_keep_their_parts() -> None:
    chat = parse_messages_request(body(
        system=[{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Two."}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}]))
    system, question = chat.messages
    assert system == Message(role="system", content=[TextPart(text="One."), TextPart(text="Two.")])
    assert isinstance(question.content, list)
    text, inline, linked = question.content
    assert text == TextPart(text="What is this?")
    assert isinstance(inline, ImagePart) and inline.image_url.url == "data:image/png;base64,iVBORw0KGgo="
    assert isinstance(linked, ImagePart) and linked.image_url.url == "https://example.com/cat.jpg"


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    chat = parse_messages_request(body(
        tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Thanks."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]}]},
        ]))
    assert chat.messages[1:] == [
        Message(role="assistant", content="Checking.", tool_calls=[ToolCall(
            id="toolu_1", function=FunctionCall(name="get_weather", arguments='{"location":"Paris"}'))]),
        Message(role="tool", tool_call_id="toolu_1", content="Sunny"),  # before the text: OpenAI's order
        Message(role="user", content=[TextPart(text="Thanks.")]),
    ]
    assert isinstance(chat.tools, list)
    (tool,) = chat.tools
    assert (tool.function.name, tool.function.parameters) == ("get_weather", WEATHER["input_schema"])
    assert chat.tool_choice == ToolChoiceFunction(function=NamedFunction(name="get_weather"))
    assert chat.parallel_tool_calls is False


@pytest.mark.parametrize(("choice", "unified"), [("auto", "auto"), ("any", "required"), ("none", "none")])
def test_tool_choice_types(choice: str, unified: str) -> None:
    chat = parse_messages_request(body(tools=[WEATHER], tool_choice={"type": choice}))
    assert chat.tool_choice == unified
    assert chat.parallel_tool_calls is not False


def test_a_round_trip_through_the_anthropic_adapter_gives_back_the_request() -> None:
    """Edge translation followed by the provider's: what reaches Anthropic is what the client sent."""
    sent = {
        "model": "claude-sonnet-4-5", "max_tokens": 300, "system": "Be brief.", "temperature": 0.5,
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}, "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "text", "text": "And tomorrow?"}]},
        ],
    }
    chat = parse_messages_request(json.dumps(sent).encode())
    upstream = json.loads(adapter.build_request(chat, "claude-sonnet-4-5", AnthropicSettings(api_key="k")).body)
    assert upstream == sent


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"max_tokens": None}, "max_tokens", "field required"),
    ({"max_tokens": 0}, "max_tokens", "Expected `int` >= 1"),
    ({"temperature": 1.5}, "temperature", "Expected `float` <= 1.0"),
    ({"top_p": -0.5}, "top_p", "Expected `float` >= 0.0"),
    ({"model": ""}, "model", "Expected `str` of length >= 1"),
    ({"messages": []}, "messages", "Expected `array` of length >= 1"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "Invalid"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0].source.type", "field required"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text", "required"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]},
     "messages[0].content[0]", "assistant message"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
     "messages[0].content[0]", "tool_result"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name", "required"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source", "`base64`"),
    ({"tools": [{"name": "x"}]}, "tools[0].input_schema", "required"),
])
def test_bad_requests_name_the_field(fields: dict[str, Any], param: str, words: str) -> None:
    raw = json.loads(body())
    raw.update(fields)
    if raw.get("max_tokens", 1) is None:
        del raw["max_tokens"]
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(json.dumps(raw).encode())
    assert caught.value.param == param
    assert words in caught.value.message
    assert caught.value.http_status == 400


@pytest.mark.parametrize("raw", [b"", b"{nope", b"[]", b"null", b'"text"'])
def test_bodies_that_are_not_a_json_object_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_messages_request(raw)


# --- answers -----------------------------------------------------------------------------------------------


def result(message: ResponseMessage, finish: str | None = "stop", usage: Usage | None = None) -> ChatResult:
    return ChatResult(id="chatcmpl-abc", created=0, model="gpt-4o", provider="up", target_model="gpt-4o",
                      choices=[Choice(index=0, message=message, finish_reason=finish)],
                      usage=usage or Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))


def test_a_text_answer_is_a_message_object() -> None:
    assert json.loads(message_json(result(ResponseMessage(content="Hi there")))) == {
        "id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-4o",
        "content": [{"type": "text", "text": "Hi there"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"location": "Paris"}')),
             ToolCall(id="call_2", function=FunctionCall(name="now", arguments="")),
             ToolCall(id="call_3", function=FunctionCall(name="bad", arguments="{not json"))]
    answer = json.loads(message_json(result(ResponseMessage(content="Let me look.", tool_calls=calls), "tool_calls")))
    assert answer["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        {"type": "tool_use", "id": "call_3", "name": "bad", "input": {"arguments": "{not json"}},
    ]
    assert answer["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    (None, "end_turn"), ("something_new", "end_turn")])
def test_finish_reasons_become_stop_reasons(finish: str | None, stop: str) -> None:
    assert json.loads(message_json(result(ResponseMessage(content="x"), finish)))["stop_reason"] == stop


def test_cached_prompt_tokens_are_counted_apart_as_anthropic_does() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=7, total_tokens=107,
                  prompt_tokens_details=PromptTokensDetails(cached_tokens=60))
    answer = json.loads(message_json(result(ResponseMessage(content="x"), usage=usage)))
    assert answer["usage"] == {"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 60}


def test_cache_writes_are_counted_apart_as_anthropic_does() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=7, total_tokens=107,
                  prompt_tokens_details=PromptTokensDetails(cached_tokens=60), cache_creation_tokens=30)
    answer = json.loads(message_json(result(ResponseMessage(content="x"), usage=usage)))
    assert answer["usage"] == {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 30,
                               "cache_read_input_tokens": 60}


def test_an_anthropic_upstream_answer_comes_back_as_it_was() -> None:
    original = json.loads((FIXTURES / "messages_response_tool_use.json").read_bytes())
    unified = adapter.parse_response(json.dumps(original).encode(), provider="claude", model="claude-3-opus")
    answer = json.loads(message_json(unified))
    assert (answer["id"], answer["content"], answer["stop_reason"]) == (
        original["id"], original["content"], original["stop_reason"])


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "kind"), [
    (InvalidRequest("bad"), "invalid_request_error"),
    (NotFound("no model"), "not_found_error"),
    (BodyTooLarge("big"), "request_too_large"),
    (RateLimited("slow down"), "rate_limit_error"),
    (ProviderError("upstream broke"), "api_error"),
    (Unavailable("no router"), "api_error"),
    (DeadlineExceeded("late"), "timeout_error"),
    (ProviderError("overloaded", status=529), "overloaded_error"),
    (InvalidRequest("conflict", status=409), "invalid_request_error"),
])
def test_errors_take_anthropics_shape_and_type_for_their_status(error: GatewayError, kind: str) -> None:
    assert json.loads(error_json(error, "req-1")) == {
        "type": "error", "error": {"type": kind, "message": error.message}, "request_id": "req-1"}


# --- streams -----------------------------------------------------------------------------------------------


def frames_from_upstream(wire: bytes) -> tuple[list[StreamChunk], StreamEnd]:
    """An upstream Anthropic stream as the provider worker turns it into bus frames."""
    parser = adapter.stream_parser(provider="claude", model="claude-3-opus")
    deltas: list[Delta] = []
    for name, data in SSEDecoder().feed(wire):
        deltas += parser.feed(name, data)
    summary: StreamSummary = parser.end()
    chunks = [StreamChunk(seq=i, role=d.role, content=d.content, tool_calls=d.tool_calls,
                          finish_reason=d.finish_reason, id=summary.id if i == 0 else None)
              for i, d in enumerate(deltas)]
    end = StreamEnd(seq=len(chunks), id=summary.id, model=summary.model, created=0,
                    finish_reason=summary.finish_reason, usage=summary.usage, provider="claude", target_model="m",
                    stop_sequence=summary.stop_sequence)
    return chunks, end


def significant(stream: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    """What a client reads from a stream: block boundaries, content, stop reason (not ids, pings, usage)."""
    seen: list[tuple[str, Any]] = []
    for name, data in stream:
        match name:
            case "content_block_start":
                block = data["content_block"]
                seen.append((name, (data["index"], block["type"], block.get("name"), block.get("text") or None)))
            case "content_block_delta" if data["delta"].get("partial_json", True):
                delta = data["delta"]
                seen.append((name, (data["index"], delta["type"], delta.get("text") or delta.get("partial_json"))))
            case "content_block_stop":
                seen.append((name, data["index"]))
            case "message_delta":
                seen.append((name, data["delta"]["stop_reason"]))
            case "message_start" | "message_stop":
                seen.append((name, None))
    return seen


@pytest.mark.parametrize("fixture", ["stream_text.txt", "stream_tool_use.txt"])
def test_an_anthropic_upstream_stream_is_relayed_as_it_was(fixture: str) -> None:
    """Documented streams through the provider's parser and back out of the edge's writer: the same events."""
    wire = (FIXTURES / fixture).read_bytes()
    chunks, end = frames_from_upstream(wire)
    writer = EventWriter.starting(chunks[0], "rid")
    ours = events(b"".join([*(writer.chunk(c) for c in chunks), writer.end(end)]))
    assert significant(ours) == significant(events(wire))
    assert ours[0][1]["message"]["id"].startswith("msg_")
    assert ours[-2][1]["usage"]["output_tokens"] == end.usage.completion_tokens  # type: ignore[union-attr]


def test_openai_style_parallel_tool_calls_become_consecutive_blocks() -> None:
    from shared.messages import FunctionCallDelta, ToolCallDelta

    def call(index: int, **fields: Any) -> StreamChunk:
        return StreamChunk(seq=0, tool_calls=[ToolCallDelta(index=index, **fields)])

    writer = EventWriter("chatcmpl-1", "gpt-4o")
    wire = b"".join([
        writer.chunk(StreamChunk(seq=0, role="assistant", content="")),
        writer.chunk(call(0, id="call_a", type="function", function=FunctionCallDelta(name="a", arguments=""))),
        writer.chunk(call(0, function=FunctionCallDelta(arguments='{"x":'))),
        writer.chunk(call(0, function=FunctionCallDelta(arguments="1}"))),
        writer.chunk(call(1, id="call_b", type="function", function=FunctionCallDelta(name="b", arguments="{}"))),
        writer.end(StreamEnd(seq=5, id="x", model="gpt-4o", created=0, finish_reason="tool_calls", usage=None,
                             provider="up", target_model="gpt-4o")),
    ])
    assert significant(events(wire)) == [
        ("message_start", None),
        ("content_block_start", (0, "tool_use", "a", None)),
        ("content_block_delta", (0, "input_json_delta", '{"x":')),
        ("content_block_delta", (0, "input_json_delta", "1}")),
        ("content_block_stop", 0),
        ("content_block_start", (1, "tool_use", "b", None)),
        ("content_block_delta", (1, "input_json_delta", "{}")),
        ("content_block_stop", 1),
        ("message_delta", "tool_use"),
        ("message_stop", None),
    ]


def test_an_error_ends_the_stream_with_an_error_event_and_no_message_stop() -> None:
    writer = EventWriter("chatcmpl-1", "mock")
    wire = writer.chunk(StreamChunk(seq=0, role="assistant", content="Half an")) + writer.error(
        ProviderError("upstream died", code="provider_stream_truncated"))
    names = [name for name, _ in events(wire)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert events(wire)[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "upstream died"}}


def test_a_cached_answer_replays_as_a_stream_of_the_same_message() -> None:
    calls = [ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"location":"Paris"}'))]
    cached = result(ResponseMessage(content="one two three four five six seven eight nine", tool_calls=calls),
                    "tool_calls")
    stream = events(replay(cached))
    text = "".join(d["delta"]["text"] for n, d in stream if n == "content_block_delta" and d["index"] == 0)
    assert text == "one two three four five six seven eight nine"
    assert [n for n, _ in stream].count("content_block_delta") == 4  # three pieces of text, one of arguments
    assert significant(stream)[-5:] == [
        ("content_block_start", (1, "tool_use", "get_weather", None)),
        ("content_block_delta", (1, "input_json_delta", '{"location":"Paris"}')),
        ("content_block_stop", 1),
        ("message_delta", "tool_use"),
        ("message_stop", None),
    ]
    assert stream[-2][1]["usage"] == {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0}


# --- stop sequences: known only when the provider says which one matched (Anthropic does) -----------------


def test_a_matched_stop_sequence_is_reported_when_the_provider_says() -> None:
    upstream = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-opus",
                "content": [{"type": "text", "text": "One, two"}], "stop_reason": "stop_sequence",
                "stop_sequence": "three", "usage": {"input_tokens": 5, "output_tokens": 3}}
    unified = adapter.parse_response(json.dumps(upstream).encode(), provider="claude", model="claude-3-opus")
    assert (unified.choices[0].finish_reason, unified.stop_sequence) == ("stop", "three")
    answer = json.loads(message_json(unified))
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", "three")


def test_a_streamed_stop_sequence_reaches_the_message_delta() -> None:
    wire = (FIXTURES / "stream_text.txt").read_bytes().replace(
        b'"stop_reason":"end_turn","stop_sequence":null', b'"stop_reason":"stop_sequence","stop_sequence":"!"')
    chunks, end = frames_from_upstream(wire)
    assert end.stop_sequence == "!"
    writer = EventWriter.starting(chunks[0], "rid")
    stream = events(b"".join([*(writer.chunk(c) for c in chunks), writer.end(end)]))
    assert stream[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "!"}
    cached = msgspec.structs.replace(result(ResponseMessage(content="Hello there")), stop_sequence="!")
    assert events(replay(cached))[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "!"}
