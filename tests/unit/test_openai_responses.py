"""OpenAI's Responses API as an upstream: its answer and its events become the unified result and deltas,
with the items a translation could not carry (reasoning) kept whole."""

from __future__ import annotations

import json

import pytest

from services.providers.openai.responses import EventParser, parse_response, upstream_body
from shared.errors import GatewayError, RateLimited

REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}


def test_the_body_goes_out_as_written_with_model_stream_and_store_set() -> None:
    body = json.dumps({"model": "public", "input": "hi", "include": ["reasoning.encrypted_content"], "stream": True})
    sent = json.loads(upstream_body(body.encode(), "gpt-5", stream=False))
    assert sent == {"model": "gpt-5", "input": "hi", "include": ["reasoning.encrypted_content"], "store": False}
    assert json.loads(upstream_body(body.encode(), "gpt-5", stream=True))["stream"] is True


def test_an_answer_keeps_its_items_and_tells_the_unified_side_its_calls() -> None:
    output = [REASONING,
              {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "spawn", "namespace": "agents",
               "arguments": "{}"},
              {"type": "custom_tool_call", "id": "ctc_1", "call_id": "c2", "name": "apply_patch", "input": "*** Begin"}]
    body = {"id": "resp_1", "object": "response", "created_at": 5, "status": "completed", "model": "gpt-5",
            "output": output, "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17,
                                        "input_tokens_details": {"cached_tokens": 4},
                                        "output_tokens_details": {"reasoning_tokens": 5}}}
    result = parse_response(json.dumps(body).encode(), provider="openai", model="gpt-5")
    assert result.responses_output is not None and json.loads(result.responses_output) == output
    calls = result.choices[0].message.tool_calls
    assert isinstance(calls, list) and [(c.id, c.function.name) for c in calls] == [
        ("c1", "agents__spawn"), ("c2", "apply_patch")]
    assert json.loads(calls[1].function.arguments) == {"input": "*** Begin"}
    assert result.choices[0].finish_reason == "tool_calls"
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 7, 17)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 5


def _feed(parser: EventParser, kind: str, **data: object) -> list[object]:
    return list(parser.feed(kind, json.dumps({"type": kind, **data})))


def test_events_become_deltas_and_reasoning_items_pass_whole() -> None:
    parser = EventParser(provider="openai", model="gpt-5")
    assert _feed(parser, "response.created", response={"id": "resp_1", "status": "in_progress", "output": []}) == []
    (reasoning,) = _feed(parser, "response.output_item.done", output_index=0, item=REASONING)
    assert json.loads(reasoning.item_json) == REASONING  # type: ignore[attr-defined]
    (text,) = _feed(parser, "response.output_text.delta", item_id="msg_1", delta="Hel")
    assert text.content == "Hel"  # type: ignore[attr-defined]
    (call,) = _feed(parser, "response.output_item.added", output_index=2,
                    item={"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": ""})
    (args,) = _feed(parser, "response.function_call_arguments.delta", item_id="fc_1", delta="{}")
    assert call.tool_calls[0].id == "c1" and args.tool_calls[0].function.arguments == "{}"  # type: ignore[attr-defined]
    _feed(parser, "response.completed", response={"id": "resp_1", "status": "completed", "output": [],
                                                  "usage": {"input_tokens": 1, "output_tokens": 2}})
    summary = parser.end()
    assert summary.finish_reason == "tool_calls" and summary.usage is not None and summary.usage.total_tokens == 3


@pytest.mark.parametrize(("kind", "data", "error"), [
    ("response.failed", {"response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}}},
     RateLimited),
    ("error", {"code": "server_error", "message": "boom"}, GatewayError),
])
def test_a_failure_in_the_stream_is_an_error(kind: str, data: dict[str, object], error: type[GatewayError]) -> None:
    parser = EventParser(provider="openai", model="gpt-5")
    with pytest.raises(error):
        _feed(parser, kind, **data)


def test_a_stream_cut_before_completed_is_an_error() -> None:
    parser = EventParser(provider="openai", model="gpt-5")
    _feed(parser, "response.output_text.delta", item_id="m", delta="x")
    with pytest.raises(GatewayError, match=r"response\.completed"):
        parser.end()
