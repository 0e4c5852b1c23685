"""Anthropic's Messages event stream, written from the unified stream frames: `message_start`, one
`content_block_start` / `content_block_delta`… / `content_block_stop` group per text or tool-use block,
`message_delta` (stop reason, usage), `message_stop`. A failure ends it with an `error` event instead, never
with `message_stop`, so the SDKs raise rather than return half an answer.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from services.ingress.anthropic_dialect import (
    AnthropicMessage,
    ErrorBody,
    ErrorDetail,
    MessageUsage,
    OutRedactedThinking,
    OutText,
    OutThinking,
    OutToolUse,
    error_type,
    message_id,
    stop_reason,
    usage_of,
)
from shared.errors import GatewayError
from shared.messages import ChatResult, FunctionCallDelta, StreamChunk, StreamEnd, ToolCallDelta

Kind = Literal["text", "tool_use", "thinking", "redacted_thinking", "server"]

_json = msgspec.json.Encoder()
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_EMPTY_INPUT = msgspec.Raw(b"{}")


class MessageStart(Struct, tag="message_start", tag_field="type"):
    message: AnthropicMessage


class BlockStart(Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: OutText | OutToolUse | OutThinking | OutRedactedThinking | msgspec.Raw


class TextDelta(Struct, tag="text_delta", tag_field="type"):
    text: str


class InputJsonDelta(Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ThinkingDelta(Struct, tag="thinking_delta", tag_field="type"):
    thinking: str


class SignatureDelta(Struct, tag="signature_delta", tag_field="type"):
    signature: str


class BlockDelta(Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta | msgspec.Raw


class BlockStop(Struct, tag="content_block_stop", tag_field="type"):
    index: int


class StopDelta(Struct):
    stop_reason: str
    stop_sequence: str | None = None


class MessageDelta(Struct, tag="message_delta", tag_field="type"):
    delta: StopDelta
    usage: MessageUsage


def event(name: bytes, data: Struct) -> bytes:
    return b"event: " + name + b"\ndata: " + _json.encode(data) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    body = ErrorBody(error=ErrorDetail(type=error_type(error.http_status), message=error.message))
    return event(b"error", body)


class EventWriter:
    """A `stream.Writer` for Anthropic's dialect: frames in, named SSE events out."""

    def __init__(self, id: str, model: str) -> None:
        self.id = message_id(id)
        self.model = model
        self.started = False
        self.blocks = 0  # content blocks opened so far; the open one is the last
        self.open: Kind | None = None
        self.tools: dict[int, int] = {}  # unified tool call index -> content block index
        self.finish_reason: str | None = None

    @classmethod
    def starting(cls, first: StreamChunk, rid: str) -> EventWriter:
        return cls(first.id or rid, first.model or "")

    def chunk(self, frame: StreamChunk) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            start = AnthropicMessage(id=self.id, content=[], model=self.model, stop_reason=None,
                                     usage=MessageUsage(input_tokens=0, output_tokens=0))
            out += [event(b"message_start", MessageStart(message=start)), PING]
        if frame.server_block is not None:  # a server tool's block: as Anthropic sent it
            self._open(out, "server", msgspec.Raw(frame.server_block))
        if frame.server_delta is not None and self.open == "server":
            out.append(event(b"content_block_delta", BlockDelta(index=self.blocks - 1,
                                                                 delta=msgspec.Raw(frame.server_delta))))
        if frame.redacted_thinking is not None:
            self._open(out, "redacted_thinking", OutRedactedThinking(data=frame.redacted_thinking))
            self._close(out)
        if frame.thinking:
            if self.open != "thinking":
                self._open(out, "thinking", OutThinking(thinking="", signature=""))
            out.append(event(b"content_block_delta", BlockDelta(index=self.blocks - 1,
                                                                 delta=ThinkingDelta(thinking=frame.thinking))))
        if frame.signature:
            if self.open != "thinking":
                self._open(out, "thinking", OutThinking(thinking="", signature=""))
            out.append(event(b"content_block_delta", BlockDelta(index=self.blocks - 1,
                                                                 delta=SignatureDelta(signature=frame.signature))))
            self._close(out)  # the signature ends its thinking block
        if frame.content:
            if self.open != "text":
                self._open(out, "text", OutText(text=""))
            out.append(event(b"content_block_delta", BlockDelta(index=self.blocks - 1,
                                                                 delta=TextDelta(text=frame.content))))
        for call in frame.tool_calls or ():
            self._tool_call(out, call)
        if frame.finish_reason is not None:
            self.finish_reason = frame.finish_reason
        return b"".join(out)

    def end(self, frame: StreamEnd) -> bytes:
        out: list[bytes] = []
        self._close(out)
        reason = stop_reason(frame.finish_reason or self.finish_reason, frame.stop_sequence)
        delta = StopDelta(stop_reason=reason, stop_sequence=frame.stop_sequence)
        out.append(event(b"message_delta", MessageDelta(delta=delta, usage=usage_of(frame.usage))))
        out.append(MESSAGE_STOP)
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return error_event(error)

    def _tool_call(self, out: list[bytes], call: ToolCallDelta) -> None:
        function = call.function if isinstance(call.function, FunctionCallDelta) else FunctionCallDelta()
        block = self.tools.get(call.index)
        if block is None:
            name = function.name if isinstance(function.name, str) else ""
            tool_id = call.id if isinstance(call.id, str) else f"toolu_{self.id}_{call.index}"
            self._open(out, "tool_use", OutToolUse(id=tool_id, name=name, input=_EMPTY_INPUT))
            block = self.tools[call.index] = self.blocks - 1
        if isinstance(function.arguments, str) and function.arguments:
            out.append(event(b"content_block_delta", BlockDelta(
                index=block, delta=InputJsonDelta(partial_json=function.arguments))))

    def _open(self, out: list[bytes], kind: Kind,
              block: OutText | OutToolUse | OutThinking | OutRedactedThinking | msgspec.Raw) -> None:
        self._close(out)
        out.append(event(b"content_block_start", BlockStart(index=self.blocks, content_block=block)))
        self.blocks += 1
        self.open = kind

    def _close(self, out: list[bytes]) -> None:
        if self.open is not None:
            out.append(event(b"content_block_stop", BlockStop(index=self.blocks - 1)))
            self.open = None


def frames_of(result: ChatResult, words_per_chunk: int = 4) -> tuple[list[StreamChunk], StreamEnd]:
    """A cached answer as the frames a live stream of it would have been: text a few words at a time."""
    choice = result.choices[0] if result.choices else None
    chunks = [StreamChunk(seq=0, role="assistant", id=result.id, model=result.model)]
    for block in (choice.message.thinking or ()) if choice is not None else ():
        if block.type == "redacted_thinking":
            chunks.append(StreamChunk(seq=len(chunks), redacted_thinking=block.data or ""))
        else:
            chunks.append(StreamChunk(seq=len(chunks), thinking=block.thinking or "", signature=block.signature or ""))
    for server in (choice.message.server_blocks or ()) if choice is not None else ():
        chunks.append(StreamChunk(seq=len(chunks), server_block=server))
    text = (choice.message.content or "") if choice is not None else ""
    words = text.split(" ") if text else []
    for i in range(0, len(words), words_per_chunk):
        piece = " ".join(words[i:i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
        chunks.append(StreamChunk(seq=len(chunks), content=piece))
    calls = (choice.message.tool_calls or []) if choice is not None else []
    for n, call in enumerate(calls):
        delta = ToolCallDelta(index=n, id=call.id, type="function", function=FunctionCallDelta(
            name=call.function.name, arguments=call.function.arguments))
        chunks.append(StreamChunk(seq=len(chunks), tool_calls=[delta]))
    end = StreamEnd(seq=len(chunks), id=result.id, model=result.model, created=result.created,
                    finish_reason=choice.finish_reason if choice is not None else None, usage=result.usage,
                    provider=result.provider, target_model=result.target_model, cost_usd=result.cost_usd,
                    stop_sequence=result.stop_sequence)
    return chunks, end


def replay(result: ChatResult) -> bytes:
    """A cached answer as a real multi-event stream with exactly its text and tool calls."""
    chunks, end = frames_of(result)
    writer = EventWriter(result.id, result.model)
    return b"".join([*(writer.chunk(c) for c in chunks), writer.end(end)])
