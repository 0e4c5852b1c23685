"""OpenAI's Responses API as the mock upstream speaks it (`POST /v1/responses`): every answer starts with a
reasoning item carrying opaque `encrypted_content`, as OpenAI's reasoning models do, then the message or
the function call; streams follow the documented event sequence with `sequence_number`s.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tests.mockupstream.formats import Dialect, Message, Part, Plan, Stream, openai_error, plan, split

REASONING_TOKENS = 3


class _Item(msgspec.Struct):
    type: str = "message"
    role: str = ""
    content: str | list[Part] | None = None


class _Tool(msgspec.Struct):
    type: str = ""
    name: str = ""


class _Request(msgspec.Struct):
    model: str = ""
    input: str | list[_Item] = ""
    instructions: str | None = None
    stream: bool = False
    tools: list[_Tool] | None = None


_decoder = msgspec.json.Decoder(_Request)
_encode = msgspec.json.Encoder().encode


def _plan(url: bytes, body: bytes) -> Plan:
    r = _decoder.decode(body)
    items = [_Item(role="user", content=r.input)] if isinstance(r.input, str) else r.input
    # Items that are not messages (calls, their outputs, reasoning) count as turns of their own, so a
    # conversation that ends with a tool's output is answered with text.
    messages = [Message(role=i.role if i.type == "message" else i.type, content=i.content) for i in items]
    tools = [t.name for t in r.tools or () if t.type in ("function", "custom")]
    return plan(r.model, messages, r.instructions or "", r.stream, False, tools)


def _reasoning(seq: int) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_mock_{seq}", "summary": [], "encrypted_content": f"enc-mock-{seq}"}


def _answer(p: Plan, seq: int, *, done: bool) -> dict[str, Any]:
    if p.tool is not None:
        return {"type": "function_call", "id": f"fc_mock_{seq}", "call_id": f"call_mock_{seq}", "name": p.tool,
                "arguments": p.arguments if done else "", "status": "completed" if done else "in_progress"}
    content = [{"type": "output_text", "text": p.text, "annotations": []}] if done else []
    return {"type": "message", "id": f"msg_mock_{seq}", "role": "assistant", "content": content,
            "status": "completed" if done else "in_progress"}


def _response(p: Plan, seq: int, *, done: bool) -> dict[str, Any]:
    usage = {"input_tokens": p.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": p.completion_tokens + REASONING_TOKENS,
             "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
             "total_tokens": p.prompt_tokens + p.completion_tokens + REASONING_TOKENS}
    return {"id": f"resp_mock_{seq}", "object": "response", "created_at": int(time.time()),
            "status": "completed" if done else "in_progress", "model": p.model,
            "output": [_reasoning(seq), _answer(p, seq, done=True)] if done else [],
            "usage": usage if done else None, "error": None, "incomplete_details": None,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def _body(p: Plan, seq: int) -> bytes:
    return _encode(_response(p, seq, done=True))


def _stream(p: Plan, seq: int, chunks: int) -> Stream:
    n = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal n
        n += 1
        return b"event: %b\ndata: %b\n\n" % (kind.encode(), _encode({"type": kind, "sequence_number": n - 1, **data}))

    head = [event("response.created", response=_response(p, seq, done=False)),
            event("response.in_progress", response=_response(p, seq, done=False)),
            event("response.output_item.added", output_index=0, item={**_reasoning(seq), "encrypted_content": None}),
            event("response.output_item.done", output_index=0, item=_reasoning(seq)),
            event("response.output_item.added", output_index=1, item=_answer(p, seq, done=False))]
    item_id = _answer(p, seq, done=False)["id"]
    if p.tool is not None:
        content = [event("response.function_call_arguments.delta", item_id=item_id, output_index=1, delta=piece)
                   for piece in split(p.arguments, chunks)]
        tail = [event("response.function_call_arguments.done", item_id=item_id, output_index=1,
                      arguments=p.arguments)]
    else:
        part = {"type": "output_text", "text": "", "annotations": []}
        head.append(event("response.content_part.added", item_id=item_id, output_index=1, content_index=0, part=part))
        content = [event("response.output_text.delta", item_id=item_id, output_index=1, content_index=0,
                         delta=piece, logprobs=[]) for piece in split(p.text, chunks)]
        tail = [event("response.output_text.done", item_id=item_id, output_index=1, content_index=0, text=p.text,
                      logprobs=[]),
                event("response.content_part.done", item_id=item_id, output_index=1, content_index=0,
                      part={**part, "text": p.text})]
    tail += [event("response.output_item.done", output_index=1, item=_answer(p, seq, done=True)),
             event("response.completed", response=_response(p, seq, done=True))]
    return head, content, tail


DIALECT = Dialect(_plan, _body, _stream, openai_error)
