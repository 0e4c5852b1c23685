"""Bedrock's `converse-stream` events (already unframed by `eventstream.py`) in, OpenAI-shaped deltas out.

A Claude model called through InvokeModel for a Messages client streams `chunk` events instead, each the
base64 of one Anthropic Messages event: those go through the Anthropic parser.

Events: messageStart, contentBlockStart (a tool use's id and name), contentBlockDelta (text, or a tool use's
input as partial JSON), contentBlockStop, messageStop (the stop reason: the proper end), metadata (usage).
A modeled exception in the stream (`throttlingException`, `modelStreamErrorException`, …) becomes the error
its documented HTTP status stands for (API_runtime_ConverseStreamOutput.html).
"""

from __future__ import annotations

import base64
import time
import uuid

import msgspec
from msgspec import Struct

from services.providers.anthropic.stream import EventParser
from services.providers.base import Delta, StreamSummary, bad_response, stream_truncated
from services.providers.bedrock.adapter import (
    STOP_REASONS,
    ErrorBody,
    TokenUsage,
    error_decoder,
    error_from_exception,
    unified_usage,
)
from shared.errors import GatewayError
from shared.messages import FunctionCallDelta, ToolCallDelta

# --- the events' payloads: one loose shape for all of them, so new kinds are skipped, not fatal ----


class _ToolUseStart(Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""


class _Start(Struct, rename="camel"):
    tool_use: _ToolUseStart | None = None


class _ToolUseDelta(Struct):
    input: str = ""


class _Delta(Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolUseDelta | None = None


class _Event(Struct, rename="camel"):
    content_block_index: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stop_reason: str | None = None
    usage: TokenUsage | None = None


_event_decoder = msgspec.json.Decoder(_Event)


class _Chunk(Struct):
    bytes: str = ""  # base64


_chunk_decoder = msgspec.json.Decoder(_Chunk)

# The HTTP status each exception member of ConverseStreamOutput is documented with.
_EXCEPTION_STATUS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
}


class ConverseStreamParser:
    """A `StreamParser` for one Bedrock ConverseStream."""

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"  # Converse gives its answers no id
        self.created = int(time.time())
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.role_sent = False
        self.stopped = False
        self.anthropic: EventParser | None = None

    def _messages_events(self) -> EventParser:
        if self.anthropic is None:
            self.anthropic = EventParser(provider=self.provider, model=self.model)
        return self.anthropic

    def _chunk(self, data: str) -> str:
        try:
            return base64.b64decode(_chunk_decoder.decode(data).bytes).decode()
        except (msgspec.DecodeError, ValueError) as exc:
            raise bad_response(self.provider, f"a stream chunk is not base64 JSON: {exc}") from exc

    def feed(self, event: str | None, data: str) -> list[Delta]:
        if event and event.endswith("Exception"):
            raise self._error(event, data)
        if event == "chunk":  # InvokeModel's stream: each chunk carries one Anthropic Messages event
            return self._messages_events().feed(None, self._chunk(data))
        try:
            e = _event_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream event is not JSON: {exc}") from exc
        match event:
            case "contentBlockDelta" if e.delta is not None:
                return self._block_delta(e.content_block_index, e.delta)
            case "contentBlockStart" if e.start is not None and e.start.tool_use is not None:
                call = self.tools[e.content_block_index] = len(self.tools)
                start = ToolCallDelta(
                    index=call,
                    id=e.start.tool_use.tool_use_id,
                    type="function",
                    function=FunctionCallDelta(name=e.start.tool_use.name, arguments=""),
                )
                return [self._first(Delta(tool_calls=[start]))]
            case "messageStop":
                self.stopped = True
                self.finish_reason = STOP_REASONS.get(e.stop_reason or "", "stop")
                return [self._first(Delta(finish_reason=self.finish_reason))]
            case "metadata" if e.usage is not None:
                self.usage = e.usage
        return []  # messageStart, contentBlockStop, reasoning deltas, unknown events

    def end(self) -> StreamSummary:
        if self.anthropic is not None:
            return self.anthropic.end()
        if not self.stopped:
            raise stream_truncated(self.provider, "messageStop")
        return StreamSummary(
            id=self.id,
            model=self.model,
            created=self.created,
            finish_reason=self.finish_reason,
            usage=unified_usage(self.usage) if self.usage is not None else None,
        )

    def _block_delta(self, index: int, delta: _Delta) -> list[Delta]:
        if delta.text:
            return [self._first(Delta(content=delta.text))]
        if (
            delta.tool_use is not None
            and delta.tool_use.input
            and (call := self.tools.get(index)) is not None
        ):
            arguments = FunctionCallDelta(arguments=delta.tool_use.input)
            return [self._first(Delta(tool_calls=[ToolCallDelta(index=call, function=arguments)]))]
        return []

    def _first(self, delta: Delta) -> Delta:
        # OpenAI clients expect the role in the first chunk; it rides on the first real delta.
        if not self.role_sent:
            delta.role = "assistant"
            self.role_sent = True
        return delta

    def _error(self, exception: str, data: str) -> GatewayError:
        try:
            body = error_decoder.decode(data)
        except msgspec.DecodeError:
            body = ErrorBody()
        return error_from_exception(
            _EXCEPTION_STATUS.get(exception, 500),
            exception[:1].upper() + exception[1:],  # the same name as the HTTP error's type
            body.message or body.capitalised or exception,
            {},
            provider=self.provider,
        )
