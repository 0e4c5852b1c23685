"""Anthropic's Messages API at the edge: a unified answer or error becomes Anthropic's Message object or error
body (requests: `anthropic_request.py`; streams: `anthropic_events.py`).

The reverse of `services/providers/anthropic/`, which speaks the same format to an upstream.
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.ingress.anthropic_request import parse_messages_request
from shared.errors import GatewayError
from shared.messages import ChatResult, TokenCount, Usage

__all__ = ["PATHS", "parse_messages_request"]

# Every path of the Messages API: errors on these (404 and 405 included) take Anthropic's shape.
PATHS = frozenset({"/v1/messages", "/messages"})
COUNT_PATHS = frozenset({"/v1/messages/count_tokens", "/messages/count_tokens"})


def is_messages_path(path: str) -> bool:
    return path in PATHS or path.startswith(("/v1/messages/", "/messages/"))


# --- the answer ------------------------------------------------------------------------------------------

STOP_REASONS = {  # unified finish reason -> Anthropic stop reason; anything else reads as end_turn
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class OutText(Struct, tag="text", tag_field="type"):
    text: str


class OutToolUse(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw


class OutThinking(Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class OutRedactedThinking(Struct, tag="redacted_thinking", tag_field="type"):
    data: str


# `msgspec.Raw`: a server tool's block, as the provider sent it.
OutBlock = OutThinking | OutRedactedThinking | OutText | OutToolUse | msgspec.Raw


class MessageUsage(Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class AnthropicMessage(Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutBlock] | msgspec.Raw  # Raw: the provider's own content array, as it sent it
    model: str
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: MessageUsage


_json = msgspec.json.Encoder()
_object = msgspec.json.Decoder(dict[str, msgspec.Raw])


def message_id(unified_id: str) -> str:
    """Anthropic's ids start with `msg_`; the unified id is kept after it so logs still match."""
    if unified_id.startswith("msg_"):
        return unified_id
    return "msg_" + (unified_id.removeprefix("chatcmpl-") or uuid.uuid4().hex)


def stop_reason(finish_reason: str | None, stop_sequence: str | None = None) -> str:
    if stop_sequence is not None and finish_reason in (None, "stop"):
        return "stop_sequence"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage_of(usage: Usage | None) -> MessageUsage:
    """The unified usage counts prompt-cache reads and writes inside the prompt (as OpenAI does); Anthropic
    counts them apart from `input_tokens`."""
    if usage is None:
        return MessageUsage(input_tokens=0, output_tokens=0)
    read, written = usage.cache_read_tokens, usage.cache_creation_tokens
    return MessageUsage(input_tokens=max(0, usage.prompt_tokens - read - written),
                        output_tokens=usage.completion_tokens,
                        cache_creation_input_tokens=written, cache_read_input_tokens=read)


def tool_input(arguments: str) -> msgspec.Raw:
    """A tool call's arguments text as the JSON object Anthropic's `input` is; `{}` when there are none.
    Arguments that are not a JSON object (a model's mistake) travel whole under `arguments`."""
    if not arguments.strip():
        return msgspec.Raw(b"{}")
    try:
        _object.decode(arguments)
    except msgspec.DecodeError:
        return msgspec.Raw(_json.encode({"arguments": arguments}))
    return msgspec.Raw(arguments.encode())


def message_of(result: ChatResult) -> AnthropicMessage:
    choice = result.choices[0] if result.choices else None
    blocks: list[OutBlock] = []
    if choice is not None:
        for block in choice.message.thinking or ():
            if block.type == "redacted_thinking":
                blocks.append(OutRedactedThinking(data=block.data if isinstance(block.data, str) else ""))
            else:
                blocks.append(OutThinking(thinking=block.thinking if isinstance(block.thinking, str) else "",
                                          signature=block.signature if isinstance(block.signature, str) else ""))
        blocks += [msgspec.Raw(block) for block in choice.message.server_blocks or ()]
        if choice.message.content:
            blocks.append(OutText(text=choice.message.content))
        for call in choice.message.tool_calls or ():
            blocks.append(OutToolUse(id=call.id, name=call.function.name, input=tool_input(call.function.arguments)))
    content: list[OutBlock] | msgspec.Raw = blocks
    if choice is not None and isinstance(choice.message.content_json, bytes):
        content = msgspec.Raw(choice.message.content_json)  # server tools' blocks, citations, in their order
    return AnthropicMessage(
        id=message_id(result.id),
        content=content,
        model=result.model,
        stop_reason=stop_reason(choice.finish_reason if choice is not None else None, result.stop_sequence),
        stop_sequence=result.stop_sequence,
        usage=usage_of(result.usage),
    )


def message_json(result: ChatResult) -> bytes:
    return _json.encode(message_of(result))


class TokenCountBody(Struct):
    input_tokens: int


def count_json(count: TokenCount) -> bytes:
    """`count_tokens`'s answer, as Anthropic documents it."""
    return _json.encode(TokenCountBody(input_tokens=count.input_tokens))


# --- errors ----------------------------------------------------------------------------------------------

# Anthropic's documented error type for each HTTP status ("Errors": 4xx not listed read as
# invalid_request_error, 5xx as api_error). The status itself stays the gateway's own.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ErrorDetail(Struct, kw_only=True):
    type: str
    message: str


class ErrorBody(Struct, kw_only=True):
    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | UnsetType = UNSET


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_json(error: GatewayError, rid: str | None = None) -> bytes:
    """Anthropic's error body, so its SDKs raise the class that matches the status, with our message."""
    detail = ErrorDetail(type=error_type(error.http_status), message=error.message)
    return _json.encode(ErrorBody(error=detail, request_id=rid if rid else UNSET))
