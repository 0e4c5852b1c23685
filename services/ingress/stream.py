"""Server-sent events from bus frames or from a cached answer: the relay, and OpenAI's chunk format (other
dialects bring their own `Writer`, e.g. `anthropic_events.py`).

Each stream is one token of the bus's reply multiplexer (`bus.Stream`). Frames arrive numbered; a gap, an
error frame, a stall longer than the idle timeout or the deadline ends the stream with an error event and
no proper ending (`[DONE]`, `message_stop`), so a client never mistakes half an answer for a whole one.
When the client goes away, a cancel notice (keyed by the stream's unguessable bus id) tells the provider
worker to close its upstream call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.ingress import shapes
from shared import bus
from shared.errors import GatewayError, ProviderError, from_reply
from shared.messages import (
    ChatResult,
    ErrorReply,
    FunctionCallDelta,
    Reply,
    StreamChunk,
    StreamEnd,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger("llm_edge.ingress.stream")

DONE = b"data: [DONE]\n\n"
_json = msgspec.json.Encoder()


class ChunkDelta(Struct, kw_only=True, omit_defaults=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(Struct, kw_only=True):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: shapes.OpenAIUsage | None | UnsetType = UNSET


def event(chunk: ChatCompletionChunk) -> bytes:
    return b"data: " + _json.encode(chunk) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    return b"data: " + shapes.error_json(error) + b"\n\n"


class Meta:
    """What labels every chunk of one answer."""

    def __init__(self, id: str, model: str, created: int, include_usage: bool) -> None:
        self.id, self.model, self.created, self.include_usage = id, model, created, include_usage

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None | UnsetType = UNSET) -> bytes:
        out: shapes.OpenAIUsage | None | UnsetType = shapes.usage_of(usage) if isinstance(usage, Usage) else usage
        if self.include_usage and usage is UNSET:
            out = None  # OpenAI sends `usage: null` on every chunk but the last when usage is asked for
        return event(ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=out))


def delta_of(frame: StreamChunk) -> ChunkDelta:
    return ChunkDelta(
        role=frame.role if frame.role is not None else UNSET,
        content=frame.content if frame.content is not None else UNSET,
        tool_calls=frame.tool_calls if frame.tool_calls is not None else UNSET,
    )


async def first_frame(stream: bus.Stream, deadline: float) -> StreamChunk:
    """The first frame decides the HTTP status: an error before any chunk is a plain JSON error."""
    frame = await stream.next(deadline - time.monotonic(), "first chunk")
    match frame:
        case StreamChunk(seq=0):
            return frame
        case ErrorReply():
            stream.finished = True
            raise from_reply(frame)
        case _:
            raise ProviderError("The stream began out of order.", code="stream_out_of_order")


class Writer(Protocol):
    """One client dialect's rendering of a stream: each frame in, the bytes to send out."""

    def chunk(self, frame: StreamChunk) -> bytes: ...

    def end(self, frame: StreamEnd) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...


class ChunkWriter:
    """OpenAI's chunk format: one SSE event per frame, usage last when asked for, then `[DONE]`."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta

    @classmethod
    def starting(cls, first: StreamChunk, rid: str, include_usage: bool) -> ChunkWriter:
        return cls(Meta(first.id or f"chatcmpl-{rid}", first.model or "", first.created or int(time.time()),
                        include_usage))

    def chunk(self, frame: StreamChunk) -> bytes:
        return self.meta.chunk([ChunkChoice(index=frame.index, delta=delta_of(frame),
                                            finish_reason=frame.finish_reason)])

    def end(self, frame: StreamEnd) -> bytes:
        if self.meta.include_usage:
            return self.meta.chunk([], usage=frame.usage or Usage()) + DONE
        return DONE

    def error(self, error: GatewayError) -> bytes:
        return error_event(error)


async def relay(
    stream: bus.Stream, first: StreamChunk, writer: Writer, idle: float, deadline: float,
    on_end: Callable[[StreamEnd], None] | None = None,
) -> AsyncIterator[bytes]:
    """Frames in order become the writer's events; anything else ends the stream with its error event,
    never with the dialect's proper ending."""
    frame: Reply = first
    expected = 0
    try:
        while True:
            match frame:
                case StreamChunk(seq=seq) if seq == expected:
                    expected += 1
                    yield writer.chunk(frame)
                case StreamEnd(seq=seq) if seq == expected:
                    stream.finished = True
                    if on_end is not None:
                        on_end(frame)
                    yield writer.end(frame)
                    return
                case ErrorReply():
                    stream.finished = True
                    yield writer.error(from_reply(frame))
                    return
                case _:
                    log.warning("stream frame out of order: expected %d", expected)
                    yield writer.error(ProviderError(
                        "The stream lost a chunk on the way; it was ended rather than delivered incomplete.",
                        code="stream_gap"))
                    return
            try:
                frame = await stream.next(min(idle, deadline - time.monotonic()), "chunk")
            except GatewayError as exc:
                yield writer.error(exc)
                return
    finally:
        await stream.close()


def replay(result: ChatResult, include_usage: bool, words_per_chunk: int = 4) -> list[bytes]:
    """A cached answer as a real multi-chunk stream with exactly its text."""
    meta = Meta(result.id, result.model, result.created, include_usage)
    frames = []
    for choice in result.choices:
        frames.append(meta.chunk([ChunkChoice(index=choice.index, delta=ChunkDelta(role="assistant", content=""))]))
        words = (choice.message.content or "").split(" ")
        for i in range(0, len(words), words_per_chunk):
            piece = " ".join(words[i:i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
            if piece:
                frames.append(meta.chunk([ChunkChoice(index=choice.index, delta=ChunkDelta(content=piece))]))
        calls = choice.message.tool_calls if choice.message.tool_calls is not UNSET else []
        for n, call in enumerate(calls):
            delta = ToolCallDelta(index=n, id=call.id, type="function", function=FunctionCallDelta(
                name=call.function.name, arguments=call.function.arguments))
            frames.append(meta.chunk([ChunkChoice(index=choice.index, delta=ChunkDelta(tool_calls=[delta]))]))
        frames.append(meta.chunk([ChunkChoice(index=choice.index, delta=ChunkDelta(),
                                              finish_reason=choice.finish_reason)]))
    if include_usage:
        frames.append(meta.chunk([], usage=result.usage))
    frames.append(DONE)
    return frames
