"""The Responses API dialect as pure functions: request body -> unified request, unified answers and stream
frames -> Response objects and typed events, each checked against the `openai` SDK's own types."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from services.ingress.responses_dialect import decode_request, response_json, to_turn
from services.ingress.responses_events import EventWriter, replay
from shared.errors import InvalidRequest
from shared.messages import ChatRequest as Unified
from shared.messages import (
    ChatResult,
    Choice,
    CompletionTokensDetails,
    FunctionCall,
    FunctionCallDelta,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    StreamChunk,
    StreamEnd,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

_events = pydantic.TypeAdapter(ResponseStreamEvent)


def turn(body: dict[str, Any], history: list[Any] | None = None) -> tuple[Unified, Any]:
    return to_turn(decode_request(json.dumps(body).encode()), history or [])


def events_of(data: bytes) -> list[Any]:
    found = []
    for block in data.decode().split("\n\n"):
        if block:
            name, payload = block.split("\n", 1)
            event = _events.validate_python(json.loads(payload.removeprefix("data: ")))
            assert name == f"event: {event.type}"
            found.append(event)
    return found


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    chat, _ = turn({"model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 9,
                    "temperature": 0.2, "reasoning": {"effort": "high", "summary": "auto"}, "user": "u"})
    assert chat.messages == [Message(role="system", content="Be brief."), Message(role="user", content="Hi")]
    assert (chat.max_completion_tokens, chat.temperature, chat.reasoning_effort, chat.user) == (9, 0.2, "high", "u")


def test_tool_calls_join_the_assistant_message_before_them_and_outputs_become_tool_messages() -> None:
    chat, _ = turn({"model": "m", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                    "input": [
                        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                        {"type": "message", "role": "assistant",
                         "content": [{"type": "output_text", "text": "let me"}]},
                        {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "zzz"},
                        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"a\":1}"},
                        {"type": "function_call_output", "call_id": "c1", "output": "one"},
                        {"type": "function_call_output", "call_id": "c2",
                         "output": [{"type": "input_text", "text": "two"}]}]})
    assert chat.messages == [
        Message(role="user", content=[TextPart(text="q")]),
        Message(role="assistant", content="let me", tool_calls=[
            ToolCall(id="c1", function=FunctionCall(name="f", arguments="{}")),
            ToolCall(id="c2", function=FunctionCall(name="f", arguments="{\"a\":1}"))]),
        Message(role="tool", tool_call_id="c1", content="one"),
        Message(role="tool", tool_call_id="c2", content="two"),
    ]
    assert chat.tool_choice is msgspec.UNSET and chat.parallel_tool_calls is msgspec.UNSET


def test_tool_choice_and_parallel_calls_are_sent_only_with_tools() -> None:
    chat, _ = turn({"model": "m", "input": "x", "tool_choice": "required", "parallel_tool_calls": False})
    assert chat.tools is msgspec.UNSET and chat.tool_choice is msgspec.UNSET
    assert chat.parallel_tool_calls is msgspec.UNSET
    chat, t = turn({"model": "m", "input": "x", "parallel_tool_calls": False, "tools": [{"type": "web_search"}]})
    assert chat.tools is msgspec.UNSET and t.toolbox.dropped == ["web_search"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}]},
     "tools[0].tools[0].type"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
])
def test_bad_input_names_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        turn(body)
    assert caught.value.param == param and caught.value.http_status == 400


def _result(message: ResponseMessage, finish: str = "stop") -> ChatResult:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15,
                  prompt_tokens_details=PromptTokensDetails(cached_tokens=4),
                  completion_tokens_details=CompletionTokensDetails(reasoning_tokens=2))
    return ChatResult(id="chatcmpl-1", created=1, model="gpt-x", choices=[Choice(index=0, message=message,
                      finish_reason=finish)], usage=usage, provider="p", target_model="gpt-x")


def test_the_answer_validates_as_the_sdks_response_with_cached_and_reasoning_tokens() -> None:
    tools = [{"type": "custom", "name": "patch"}, {"type": "namespace", "name": "ns", "description": "d",
              "tools": [{"type": "function", "name": "go"}]}]
    _, t = turn({"model": "m", "input": "x", "tools": tools, "metadata": {"k": "v"}, "store": False})
    calls = [ToolCall(id="c1", function=FunctionCall(name="patch", arguments='{"input": "*** Begin"}')),
             ToolCall(id="c2", function=FunctionCall(name="ns__go", arguments="{}"))]
    response = Response.model_validate_json(
        response_json(_result(ResponseMessage(content="hi", tool_calls=calls), "tool_calls"), t))
    assert response.status == "completed" and response.to_dict().get("store") is False
    assert response.metadata == {"k": "v"}
    message, custom, function = response.output
    assert message.type == "message" and response.output_text == "hi"
    assert custom.type == "custom_tool_call"
    assert (custom.call_id, custom.name, custom.input) == ("c1", "patch", "*** Begin")
    assert function.type == "function_call" and (function.name, function.namespace) == ("go", "ns")
    usage = response.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (10, 5, 15)
    assert usage.input_tokens_details.cached_tokens == 4 and usage.output_tokens_details.reasoning_tokens == 2


def test_a_length_stop_is_an_incomplete_response() -> None:
    _, t = turn({"model": "m", "input": "x", "max_output_tokens": 3})
    response = Response.model_validate_json(response_json(_result(ResponseMessage(content="abc"), "length"), t))
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_stream_frames_become_typed_events_in_order() -> None:
    _, t = turn({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]})
    writer = EventWriter(t, "gpt-x")
    call = ToolCallDelta(index=0, id="c1", type="function", function=FunctionCallDelta(name="f", arguments='{"a"'))
    data = b"".join([
        writer.chunk(StreamChunk(seq=0, role="assistant", content="Hel")),
        writer.chunk(StreamChunk(seq=1, content="lo")),
        writer.chunk(StreamChunk(seq=2, tool_calls=[call])),
        writer.chunk(StreamChunk(seq=3,
                                 tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments=":1}"))],
                                 finish_reason="tool_calls")),
        writer.end(StreamEnd(seq=4, id="x", model="gpt-x", created=1, finish_reason="tool_calls",
                             usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
                             provider="p", target_model="gpt-x")),
    ])
    events = events_of(data)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1].response
    assert final.output_text == "Hello" and final.output[1].arguments == '{"a":1}'
    assert {e.item_id for e in events if e.type.startswith("response.function_call")} == {final.output[1].id}
    assert writer.final is not None and Response.model_validate_json(writer.final) == final


def test_a_failure_mid_stream_ends_with_error_and_response_failed() -> None:
    from shared.errors import ProviderError

    _, t = turn({"model": "m", "input": "x"})
    writer = EventWriter(t, "gpt-x")
    data = writer.chunk(StreamChunk(seq=0, content="par")) + writer.error(ProviderError("upstream died"))
    events = events_of(data)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.message == "upstream died"
    assert writer.final is None


def test_a_cached_answer_replays_as_a_stream_with_its_text() -> None:
    _, t = turn({"model": "m", "input": "x"})
    text = "one two three four five six seven eight nine ten"
    data, final = replay(_result(ResponseMessage(content=text)), t)
    events = events_of(data)
    assert sum(e.type == "response.output_text.delta" for e in events) >= 3
    assert events[-1].type == "response.completed" and events[-1].response.output_text == text
    assert Response.model_validate_json(final).output_text == text
