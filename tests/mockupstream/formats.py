"""The wire formats of the mock upstream: what it reads from a request, the deterministic reply it plans, and
how that reply (or an error) looks as an OpenAI Chat Completions or Anthropic Messages body or SSE stream.
Azure OpenAI, Gemini and Bedrock build on this in their own modules; `dialects.py` routes paths to them.
"""

from __future__ import annotations

import hashlib
import http
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec

encode = msgspec.json.Encoder().encode
decode_any = msgspec.json.Decoder().decode

TOOL_ARGUMENTS = '{"location": "Paris"}'
REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus} | {529: b"Overloaded"}


# --- What the mock reads from a request (msgspec ignores every other field) -----------------------------


class Part(msgspec.Struct):
    text: str = ""
    type: str = ""
    thinking: str | None = None
    signature: str | None = None
    cache_control: Any = None


class Message(msgspec.Struct):
    role: str = ""
    content: str | list[Part] | None = None


class _Named(msgspec.Struct):
    name: str = ""


class _OpenAITool(msgspec.Struct):
    function: _Named | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _ChatRequest(msgspec.Struct):
    model: str = ""
    messages: list[Message] = []
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_OpenAITool] | None = None


class _Thinking(msgspec.Struct):
    type: str = "disabled"


class _AnthropicTool(msgspec.Struct):
    name: str = ""
    cache_control: Any = None


class _MessagesRequest(msgspec.Struct):
    model: str = ""
    messages: list[Message] = []
    system: str | list[Part] | None = None
    stream: bool = False
    tools: list[_AnthropicTool] | None = None
    thinking: _Thinking | None = None
    cache_control: Any = None


chat_decoder = msgspec.json.Decoder(_ChatRequest)
_messages_decoder = msgspec.json.Decoder(_MessagesRequest)


class ScriptedCall(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: str = TOOL_ARGUMENTS  # JSON text


class Scripted(msgspec.Struct, forbid_unknown_fields=True):
    """One queued answer; `body` null with an error status means the provider's documented error body, with
    `message` as its message when given (e.g. the provider's words for a context-window overflow)."""

    status: int = 200
    headers: dict[str, str] = {}
    body: Any = None
    message: str | None = None
    raw: str | None = None
    delay_ms: float = 0.0  # on top of the server's latency
    # Close the connection after this many content chunks (non-streaming: after half the body).
    fail_after_chunks: int | None = None
    # Answer with a call of this tool instead of the planned reply, in the dialect's own format (streamed
    # or not, as asked): how a test scripts an agent's turns.
    tool_call: ScriptedCall | None = None

    @property
    def replaces_reply(self) -> bool:
        return self.raw is not None or self.body is not None or self.status >= 400


class _Script(msgspec.Struct, forbid_unknown_fields=True):
    responses: list[Scripted]


script_decoder = msgspec.json.Decoder(_Script)


# --- The deterministic "model" -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    model: str
    stream: bool
    include_usage: bool
    text: str  # the reply, when not a tool call
    tool: str | None  # name of the tool to call instead
    prompt_tokens: int
    completion_tokens: int
    arguments: str = TOOL_ARGUMENTS  # the tool call's arguments (JSON text), when `tool` is set
    thinking: str | None = None  # Anthropic with thinking on: the thinking block's text
    cache_written: int = 0  # Anthropic with cache_control: prompt tokens written to / read from its cache
    cache_read: int = 0
    native: bool = False  # Bedrock's InvokeModel: Anthropic's format inside Bedrock's

    def tool_input(self) -> Any:
        return msgspec.json.decode(self.arguments)


def text_of(content: str | list[Part] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return " ".join(p.text for p in content if p.text)


def plan(
    model: str, messages: list[Message], system: str, stream: bool, usage: bool, tools: list[str]
) -> Plan:
    words = len(system.split())
    last_user = ""
    for m in messages:
        text = text_of(m.content)
        words += len(text.split())
        if m.role == "user":
            last_user = text
    # Only a user turn asks for the tool, so a conversation carrying the tool's result ends in text.
    # `mock:call NAME {json}` in it calls the tool NAME with those arguments (tests of real clients' tools).
    asked = messages and messages[-1].role == "user"
    if asked and (call := _CALL.search(last_user)) and call.group(1) in tools:
        return Plan(model, stream, usage, "", call.group(1), words, len(call.group(2).split()), call.group(2))
    if tools and asked and "weather" in last_user.lower():
        return Plan(model, stream, usage, "", tools[0], words, len(TOOL_ARGUMENTS.split()))
    reply = "Echo: " + last_user[:200]
    return Plan(model, stream, usage, reply, None, words, len(reply.split()))


_CALL = re.compile(r"mock:call (\w+) (\{.*\})", re.DOTALL)


def signature(thinking: str) -> str:
    """The mock's signature of a thinking block: what it checks when the block comes back in the history."""
    return "mocksig_" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def split(s: str, n: int) -> list[str]:
    n = max(1, min(n, len(s)))
    return [s[len(s) * i // n : len(s) * (i + 1) // n] for i in range(n)]


# A stream is (frames before the content, content frames, frames after); `fail_after_chunks` cuts the middle.
Stream = tuple[list[bytes], list[bytes], list[bytes]]


# --- OpenAI Chat Completions -----------------------------------------------------------------------------


def openai_plan(url: bytes, body: bytes) -> Plan:
    r = chat_decoder.decode(body)
    tools = [t.function.name for t in r.tools or () if t.function is not None]
    usage = r.stream_options is not None and r.stream_options.include_usage
    return plan(r.model, r.messages, "", r.stream, usage, tools)


def openai_usage(p: Plan) -> dict[str, int]:
    total = p.prompt_tokens + p.completion_tokens
    return {"prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens, "total_tokens": total}


def openai_body(p: Plan, seq: int) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": p.text or None, "refusal": None}
    if p.tool is not None:
        function = {"name": p.tool, "arguments": p.arguments}
        message["tool_calls"] = [{"id": f"call_mock_{seq}", "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "tool_calls" if p.tool else "stop",
    }
    return encode(
        {
            "id": f"chatcmpl-mock-{seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": p.model,
            "choices": [choice],
            "usage": openai_usage(p),
        }
    )


def openai_stream(p: Plan, seq: int, chunks: int) -> Stream:
    base = {
        "id": f"chatcmpl-mock-{seq}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": p.model,
    }
    if p.include_usage:
        base["usage"] = None  # documented: every chunk but the last carries `"usage": null`

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + encode({**base, "choices": [choice]}) + b"\n\n"

    if p.tool is None:
        head = frame({"role": "assistant", "content": ""})
        content = [frame({"content": piece}) for piece in split(p.text, chunks)]
    else:
        call = {
            "index": 0,
            "id": f"call_mock_{seq}",
            "type": "function",
            "function": {"name": p.tool, "arguments": ""},
        }
        head = frame({"role": "assistant", "content": None, "tool_calls": [call]})
        content = [
            frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in split(p.arguments, chunks)
        ]
    tail = [frame({}, "tool_calls" if p.tool else "stop")]
    if p.include_usage:
        tail.append(b"data: " + encode({**base, "choices": [], "usage": openai_usage(p)}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return [head], content, tail


# status -> (error.type, error.code, message), after OpenAI's documented API error codes.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def openai_error(status: int, message: str | None, seq: int) -> bytes:
    default = ("server_error" if status >= 500 else "invalid_request_error", None, reason(status))
    kind, code, text = _OPENAI_ERRORS.get(status, default)
    return encode({"error": {"message": message or text, "type": kind, "param": None, "code": code}})


# --- Anthropic Messages ----------------------------------------------------------------------------------


class ThinkingRejected(msgspec.ValidationError):
    """A thinking block came back altered or went missing: Anthropic answers such a request with a 400."""


# Prompt prefixes the mock has "cached" (Anthropic's prompt caching: the first request with a breakpoint
# writes the prefix, the next ones read it).
_CACHED: set[str] = set()


def _anthropic_plan(url: bytes, body: bytes) -> Plan:
    r = _messages_decoder.decode(body)
    tools = [t.name for t in r.tools or ()]
    p = plan(r.model, r.messages, text_of(r.system), r.stream, False, tools)
    thinking_on = r.thinking is not None and r.thinking.type in ("enabled", "adaptive")
    _check_thinking(r.messages, thinking_on)
    if thinking_on:
        p = replace(p, thinking=f"Mock thinking about {len(r.messages)} messages.")
    if _asks_for_caching(r):
        prefix = hashlib.sha256(encode([text_of(r.system), tools])).hexdigest()
        if prefix in _CACHED:
            p = replace(p, cache_read=p.prompt_tokens)
        else:
            _CACHED.add(prefix)
            p = replace(p, cache_written=p.prompt_tokens)
    return p


def _asks_for_caching(r: _MessagesRequest) -> bool:
    blocks = [*(r.system if isinstance(r.system, list) else ())]
    blocks += [b for m in r.messages if isinstance(m.content, list) for b in m.content]
    return r.cache_control is not None or any(b.cache_control is not None for b in blocks) or any(
        t.cache_control is not None for t in r.tools or ())


def _check_thinking(messages: list[Message], thinking_on: bool) -> None:
    """As Anthropic does: a thinking block in the history must carry its own signature, and with thinking
    on, an assistant turn that used a tool must begin with its thinking."""
    for i, m in enumerate(messages):
        if m.role != "assistant" or not isinstance(m.content, list):
            continue
        for block in m.content:
            if block.type == "thinking" and block.signature != signature(block.thinking or ""):
                raise ThinkingRejected(f"messages.{i}.content: Invalid `signature` in `thinking` block")
        kinds = [b.type for b in m.content]
        if thinking_on and "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking"):
            raise ThinkingRejected(f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                                   f"but found `{kinds[0]}`. When `thinking` is enabled, a final `assistant` "
                                   "message must start with a thinking block.")


def _anthropic_block(p: Plan, seq: int, *, empty: bool) -> dict[str, Any]:
    if p.tool is None:
        return {"type": "text", "text": "" if empty else p.text}
    return {
        "type": "tool_use",
        "id": f"toolu_mock_{seq}",
        "name": p.tool,
        "input": {} if empty else p.tool_input(),
    }


def _anthropic_blocks(p: Plan, seq: int) -> list[dict[str, Any]]:
    thinking = [] if p.thinking is None else [
        {"type": "thinking", "thinking": p.thinking, "signature": signature(p.thinking)}]
    return [*thinking, _anthropic_block(p, seq, empty=False)]


def _anthropic_usage(p: Plan, *, start: bool) -> dict[str, int]:
    return {
        "input_tokens": p.prompt_tokens - p.cache_written - p.cache_read,
        "cache_creation_input_tokens": p.cache_written,
        "cache_read_input_tokens": p.cache_read,
        "output_tokens": 1 if start else p.completion_tokens,
    }


def _anthropic_message(p: Plan, seq: int, *, start: bool) -> dict[str, Any]:
    return {
        "id": f"msg_mock_{seq}",
        "type": "message",
        "role": "assistant",
        "model": p.model,
        "content": [] if start else _anthropic_blocks(p, seq),
        "stop_reason": None if start else ("tool_use" if p.tool else "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(p, start=start),
    }


def _anthropic_body(p: Plan, seq: int) -> bytes:
    return encode(_anthropic_message(p, seq, start=False))


def _event(data: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (data["type"].encode(), encode(data))


def _anthropic_stream(p: Plan, seq: int, chunks: int) -> Stream:
    block = _anthropic_block(p, seq, empty=True)
    head = [_event({"type": "message_start", "message": _anthropic_message(p, seq, start=True)})]
    index = 0
    if p.thinking is not None:  # as documented: thinking deltas, then the signature, then the block's stop
        head += [
            _event({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            _event({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": p.thinking}}),
            _event({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": signature(p.thinking)}}),
            _event({"type": "content_block_stop", "index": 0}),
        ]
        index = 1
    head += [
        _event({"type": "content_block_start", "index": index, "content_block": block}),
        _event({"type": "ping"}),
    ]
    if p.tool is None:
        deltas = [{"type": "text_delta", "text": piece} for piece in split(p.text, chunks)]
    else:
        deltas = [{"type": "input_json_delta", "partial_json": s} for s in split(p.arguments, chunks)]
    content = [_event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    stop = {"stop_reason": "tool_use" if p.tool else "end_turn", "stop_sequence": None}
    tail = [
        _event({"type": "content_block_stop", "index": index}),
        _event({"type": "message_delta", "delta": stop, "usage": {"output_tokens": p.completion_tokens}}),
        _event({"type": "message_stop"}),
    ]
    return head, content, tail


# status -> error.type, after Anthropic's documented HTTP errors.
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_error(status: int, message: str | None, seq: int) -> bytes:
    kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error = {"type": kind, "message": message or reason(status)}
    return encode({"type": "error", "error": error, "request_id": f"req_mock_{seq}"})


def _no_headers(status: int) -> dict[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Dialect:
    plan: Callable[[bytes, bytes], Plan]  # (request URL with its query, body) -> what to answer
    body: Callable[[Plan, int], bytes]
    stream: Callable[[Plan, int, int], Stream]
    error: Callable[[int, str | None, int], bytes]
    stream_type: bytes = b"text/event-stream; charset=utf-8"
    error_headers: Callable[[int], dict[str, str]] = _no_headers


def _count_plan(url: bytes, body: bytes) -> Plan:
    r = _messages_decoder.decode(body)
    return plan(r.model, r.messages, text_of(r.system), False, False, [t.name for t in r.tools or ()])


def _count_body(p: Plan, seq: int) -> bytes:
    return encode({"input_tokens": p.prompt_tokens})


DIALECTS = {
    b"/v1/chat/completions": Dialect(openai_plan, openai_body, openai_stream, openai_error),
    b"/v1/messages": Dialect(_anthropic_plan, _anthropic_body, _anthropic_stream, _anthropic_error),
    b"/v1/messages/count_tokens": Dialect(_count_plan, _count_body, _anthropic_stream, _anthropic_error),
}


def reason(status: int) -> str:
    return REASONS.get(status, b"Unknown").decode()
