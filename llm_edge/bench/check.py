"""Whether a response counts as ok: a chat.completion with choices, or an SSE stream with content and `[DONE]`;
on the Responses API, a completed response, or an event stream with text that ends in `response.completed`;
on the embeddings API, a list of non-empty vectors.

The bench counts a request as successful only through these checks, so that an error page or a cut stream
that happens to carry status 200 can never flatter a gateway's figures.
"""

from __future__ import annotations

from typing import Any

import msgspec

DONE = b"[DONE]"


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    object: str
    choices: list[_Choice]


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[msgspec.Raw] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    error: Any = None  # absent from every normal chunk, so decoding it generically costs nothing


_completion = msgspec.json.Decoder(_Completion)
_chunk = msgspec.json.Decoder(_Chunk)


def completion_problem(body: bytes) -> str | None:
    """None when `body` is a chat.completion with at least one choice, else what is wrong with it."""
    try:
        reply = _completion.decode(body)
    except msgspec.DecodeError:
        return "not_a_completion"
    if reply.object != "chat.completion":
        return "not_a_completion"
    if not reply.choices:
        return "no_choices"
    return None


class _Response(msgspec.Struct):
    object: str
    status: str
    output: list[msgspec.Raw]


class _Event(msgspec.Struct):
    type: str = ""


_response = msgspec.json.Decoder(_Response)
_event = msgspec.json.Decoder(_Event)


class _Embedding(msgspec.Struct):
    embedding: msgspec.Raw  # a float array or base64; not decoded, so the generator stays cheap at 1536 floats


class _EmbeddingList(msgspec.Struct):
    object: str
    data: list[_Embedding]


_embeddings = msgspec.json.Decoder(_EmbeddingList)


def embeddings_problem(body: bytes) -> str | None:
    """None when `body` is an embeddings list with a non-empty vector for each item, else what is wrong."""
    try:
        reply = _embeddings.decode(body)
    except msgspec.DecodeError:
        return "not_embeddings"
    if reply.object != "list" or not reply.data or not all(len(item.embedding) > 2 for item in reply.data):
        return "no_vectors"
    return None


def response_problem(body: bytes) -> str | None:
    """None when `body` is a completed Responses API response with output, else what is wrong with it."""
    try:
        reply = _response.decode(body)
    except msgspec.DecodeError:
        return "not_a_response"
    if reply.object != "response":
        return "not_a_response"
    if reply.status != "completed" or not reply.output:
        return f"response_{reply.status}" if reply.status != "completed" else "no_output"
    return None


class StreamCheck:
    """Reads an SSE body piece by piece; `feed` returns how many content chunks the piece completed."""

    __slots__ = ("_buffer", "chunks", "done", "problem")

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False  # saw `data: [DONE]`
        self.chunks = 0  # events carrying content (text or a tool-call fragment)
        self.problem: str | None = None  # an event that is not a chat.completion.chunk, or an error event

    def feed(self, data: bytes) -> int:
        buffer = self._buffer + data
        if b"\r" in buffer:  # SSE allows CRLF; a lone trailing CR waits for its LF in the next piece
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        found = 0
        for event in events:
            found += self._event(event)
        self.chunks += found
        return found

    def _event(self, event: bytes) -> int:
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data or self.done:
            return 0
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        if payload == DONE:
            self.done = True
            return 0
        try:
            chunk = _chunk.decode(payload)
        except msgspec.DecodeError:
            self.problem = self.problem or "bad_stream_event"
            return 0
        if chunk.error is not None:
            self.problem = self.problem or "stream_error_event"
            return 0
        for choice in chunk.choices:
            delta = choice.delta
            if delta is not None and (delta.content or delta.tool_calls):
                return 1
        return 0

    def verdict(self) -> str | None:
        """None when the stream is complete and had content, else why it does not count."""
        if self.problem is not None:
            return self.problem
        if not self.done:
            return "stream_without_done"
        if self.chunks == 0:
            return "stream_without_content"
        return None


class ResponsesStreamCheck(StreamCheck):
    """The Responses API's events: text deltas are the content, `response.completed` the proper end."""

    __slots__ = ()

    def _event(self, event: bytes) -> int:
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data or self.done:
            return 0
        try:
            kind = _event.decode(data[0] if len(data) == 1 else b"\n".join(data)).type
        except msgspec.DecodeError:
            self.problem = self.problem or "bad_stream_event"
            return 0
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            return 1
        if kind == "response.completed":
            self.done = True
        elif kind in ("error", "response.failed", "response.incomplete"):
            self.problem = self.problem or "stream_error_event"
        return 0
