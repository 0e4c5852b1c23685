"""Anthropic's Messages event stream in, OpenAI-shaped deltas out; `message_stop` is the proper end.

Text deltas become content; each `tool_use` block becomes one tool call, numbered among the tool calls only;
thinking and its signature, and redacted thinking, travel as such; other blocks (server tools' use and
results) travel as the JSON Anthropic sent, for a Messages client to get back; unknown events are skipped.
An `error` event becomes the error its HTTP status would have been.
"""

from __future__ import annotations

import time
import uuid
from typing import TypeVar

import msgspec
from msgspec import Struct

from services.providers.anthropic.adapter import (
    FINISH_REASONS,
    MessageUsage,
    error_from_detail,
    unified_usage,
)
from services.providers.base import Delta, StreamSummary, bad_response, stream_truncated
from shared.errors import GatewayError
from shared.messages import FunctionCallDelta, ToolCallDelta

T = TypeVar("T")

# --- the events: one loose shape for all of them, so new kinds are skipped, not fatal -------------


class _Message(Struct):
    id: str = ""
    model: str = ""
    usage: MessageUsage | None = None


class _Block(Struct):
    type: str = ""
    id: str = ""
    name: str = ""
    text: str = ""
    thinking: str = ""
    signature: str = ""
    data: str = ""  # a redacted thinking block's


class _Delta(Struct):
    # A content block's delta (`type` says which) or, in `message_delta`, the message's.
    type: str = ""
    text: str = ""
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""
    stop_reason: str | None = None
    stop_sequence: str | None = None


class _ErrorDetail(Struct):
    type: str = ""
    message: str = ""


class _Event(Struct):
    type: str = ""
    index: int = 0
    message: _Message | None = None
    # Kept raw (empty when absent): a server tool's block and its deltas go on as Anthropic sent them.
    content_block: msgspec.Raw = msgspec.Raw()
    delta: msgspec.Raw = msgspec.Raw()
    usage: MessageUsage | None = None
    error: _ErrorDetail | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_block_decoder = msgspec.json.Decoder(_Block)
_delta_decoder = msgspec.json.Decoder(_Delta)
# The blocks the unified answer models; any other kind is a server's block (see `ResponseMessage`).
_MODELED = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})

# The HTTP status each documented error type comes with (docs "Errors"), for errors sent inside a stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class EventParser:
    """A `StreamParser` for one Anthropic Messages stream."""

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = ""
        self.upstream_model = ""
        self.created = int(time.time())  # Anthropic does not say when; the call started now
        self.usage = MessageUsage()
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.server: set[int] = set()  # indexes of server tools' blocks
        self.role_sent = False
        self.stopped = False

    def feed(self, event: str | None, data: str) -> list[Delta]:
        if self.stopped or event == "ping":
            return []
        try:
            e = _event_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream event is not JSON: {exc}") from exc
        match e.type or event:
            case "content_block_delta" if e.delta:
                if e.index in self.server:
                    return self._first(Delta(server_delta=bytes(e.delta)))
                return self._block_delta(e.index, self._decode(_delta_decoder, e.delta))
            case "content_block_start" if e.content_block:
                block = self._decode(_block_decoder, e.content_block)
                if block.type not in _MODELED:
                    self.server.add(e.index)
                    return self._first(Delta(server_block=bytes(e.content_block)))
                return self._block_start(e.index, block)
            case "message_start" if e.message is not None:
                self.id, self.upstream_model = e.message.id, e.message.model
                if e.message.usage is not None:
                    self._count(e.message.usage)
            case "message_delta":
                return self._message_delta(e)
            case "message_stop":
                self.stopped = True
            case "error":
                raise self._error(e.error or _ErrorDetail())
        return []

    def end(self) -> StreamSummary:
        if not self.stopped:
            raise stream_truncated(self.provider, "message_stop")
        return StreamSummary(
            id=self.id or f"msg_{uuid.uuid4().hex}",
            model=self.upstream_model or self.model,
            created=self.created,
            finish_reason=self.finish_reason or "stop",
            usage=unified_usage(self.usage),
            stop_sequence=self.stop_sequence,
        )

    def _message_delta(self, e: _Event) -> list[Delta]:
        if e.usage is not None:
            self._count(e.usage)  # cumulative counts: the last ones win
        if e.delta and self.finish_reason is None:
            stop = self._decode(_delta_decoder, e.delta)
            if stop.stop_reason == "stop_sequence":
                self.stop_sequence = stop.stop_sequence
            self.finish_reason = FINISH_REASONS.get(stop.stop_reason or "", "stop")
            return self._first(Delta(finish_reason=self.finish_reason))
        return []

    def _block_delta(self, index: int, delta: _Delta) -> list[Delta]:
        if delta.type == "text_delta" and delta.text:
            return self._first(Delta(content=delta.text))
        if delta.type == "input_json_delta" and delta.partial_json:
            call = self.tools.get(index)
            if call is not None:  # else a server tool's input: not the client's to call
                arguments = FunctionCallDelta(arguments=delta.partial_json)
                return self._first(Delta(tool_calls=[ToolCallDelta(index=call, function=arguments)]))
        if delta.type == "thinking_delta" and delta.thinking:
            return self._first(Delta(thinking=delta.thinking))
        if delta.type == "signature_delta":
            return self._first(Delta(signature=delta.signature))
        return []  # citations, server tools' input

    def _block_start(self, index: int, block: _Block) -> list[Delta]:
        if block.type == "tool_use":
            call = self.tools[index] = len(self.tools)
            start = ToolCallDelta(
                index=call,
                id=block.id,
                type="function",
                function=FunctionCallDelta(name=block.name, arguments=""),
            )
            return self._first(Delta(tool_calls=[start]))
        if block.type == "text" and block.text:
            return self._first(Delta(content=block.text))
        if block.type == "redacted_thinking":
            return self._first(Delta(redacted_thinking=block.data))
        if block.type == "thinking" and (block.thinking or block.signature):
            return self._first(Delta(thinking=block.thinking or None, signature=block.signature or None))
        return []

    def _decode(self, decoder: msgspec.json.Decoder[T], raw: msgspec.Raw) -> T:
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream event is malformed: {exc}") from exc

    def _first(self, delta: Delta) -> list[Delta]:
        # OpenAI clients expect the role in the first chunk. It rides on the first real delta rather than
        # going out alone at message_start, so an error right after message_start can still fail over.
        if not self.role_sent:
            delta.role = "assistant"
            self.role_sent = True
        return [delta]

    def _count(self, usage: MessageUsage) -> None:
        for name in MessageUsage.__struct_fields__:
            if (value := getattr(usage, name)) is not None:
                setattr(self.usage, name, value)

    def _error(self, detail: _ErrorDetail) -> GatewayError:
        return error_from_detail(_ERROR_STATUS.get(detail.type, 500), detail.type,
                                 detail.message or "an error event in the stream", {}, provider=self.provider)
