"""OpenAI's streamed Chat Completions: `chat.completion.chunk` events in, deltas out, `[DONE]` as the end.

The usage-only last chunk (asked for with `stream_options.include_usage`) feeds the summary; an `{"error": …}`
event in the stream becomes our error, with the status its code or type stands for.
"""

from __future__ import annotations

import time
import uuid

import msgspec
from msgspec import UNSET, Struct

from services.providers.base import Delta, StreamSummary, bad_response, stream_truncated
from services.providers.openai.adapter import error_from_body
from services.providers.openai.responses import EventParser
from shared.errors import GatewayError
from shared.messages import FunctionCallDelta, ToolCallDelta, Usage

# --- the chunk, as much of it as we read ---------------------------------------------------------


class _FunctionDelta(Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(Struct):
    role: str | None = None
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Error(Struct):
    type: str | None = None
    code: str | int | None = None


class _Chunk(Struct):
    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_Choice] | None = None
    usage: Usage | None = None
    error: _Error | str | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)

# An error inside a 200 stream has no status of its own: its code, else its type, says which it would
# have been. Anything unknown reads as an upstream failure (500).
_ERROR_STATUS = {
    "context_length_exceeded": 400,
    "invalid_request_error": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}


class ChunkParser:
    """A `StreamParser` for one OpenAI (or OpenAI-compatible) stream."""

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = ""
        self.upstream_model = ""
        self.created = 0
        self.usage: Usage | None = None
        self.finish_reasons: dict[int, str] = {}
        self.done = False
        self.native: EventParser | None = None  # a Responses API call answers in its own events

    def feed(self, event: str | None, data: str) -> list[Delta]:
        if self.native is None and event is not None and event.startswith("response."):
            self.native = EventParser(provider=self.provider, model=self.model)
        if self.native is not None:
            return self.native.feed(event, data)
        if self.done:
            return []
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _chunk_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream chunk is not JSON: {exc}") from exc
        if chunk.error is not None or event == "error":
            raise self._error(chunk.error, data)
        if not self.id:
            self.id, self.upstream_model, self.created = chunk.id, chunk.model, chunk.created
        if chunk.usage is not None:
            self.usage = chunk.usage
        deltas = []
        for choice in chunk.choices or ():
            delta = choice.delta or _Delta()
            if choice.finish_reason is not None:
                self.finish_reasons[choice.index] = choice.finish_reason
            elif delta.role is None and not delta.content and not delta.tool_calls:
                continue  # nothing a client could use (e.g. a refusal or logprobs-only chunk)
            deltas.append(
                Delta(
                    index=choice.index,
                    role=delta.role,
                    content=delta.content,
                    tool_calls=[_tool_call(c) for c in delta.tool_calls] if delta.tool_calls else None,
                    finish_reason=choice.finish_reason,
                )
            )
        return deltas

    def end(self) -> StreamSummary:
        if self.native is not None:
            return self.native.end()
        if not self.done:
            raise stream_truncated(self.provider, "[DONE]")
        reasons = self.finish_reasons
        return StreamSummary(
            id=self.id or f"chatcmpl-{uuid.uuid4().hex}",
            model=self.upstream_model or self.model,
            created=self.created or int(time.time()),
            finish_reason=reasons.get(0) or next(reversed(reasons.values()), None),
            usage=self.usage,
        )

    def _error(self, error: _Error | str | None, data: str) -> GatewayError:
        status = 500
        if isinstance(error, _Error):
            code = error.code
            if isinstance(code, int):
                status = code if 400 <= code <= 599 else 500  # some compatible servers send the status
            else:
                status = _ERROR_STATUS.get(code or "") or _ERROR_STATUS.get(error.type or "", 500)
        return error_from_body(status, data.encode(), {}, provider=self.provider)


def _tool_call(call: _ToolCallDelta) -> ToolCallDelta:
    function = call.function
    return ToolCallDelta(
        index=call.index,
        id=UNSET if call.id is None else call.id,
        type=UNSET if call.type is None else call.type,
        function=UNSET
        if function is None
        else FunctionCallDelta(
            name=UNSET if function.name is None else function.name,
            arguments=UNSET if function.arguments is None else function.arguments,
        ),
    )
