"""Gemini's `streamGenerateContent?alt=sse`: each SSE event one `GenerateContentResponse`, deltas out.

Text parts are increments; a `functionCall` part arrives whole, so it becomes one complete tool-call delta.
Gemini sends no terminator: the body's end is the stream's end, and a stream that ends before any
candidate carried a `finishReason` was cut short (an error, not a short answer). An `{"error": …}` event
becomes the error its `code` (an HTTP status) stands for.
"""

from __future__ import annotations

import time
import uuid

import msgspec

from services.providers.base import Delta, StreamSummary, bad_response, stream_truncated
from services.providers.gemini.adapter import (
    GenerateContentResponse,
    UsageMetadata,
    blocked_or_empty,
    error_from_detail,
    finish_reason,
    tool_call_id,
    unified_usage,
)
from shared.messages import FunctionCallDelta, ToolCallDelta

_decoder = msgspec.json.Decoder(GenerateContentResponse)


class ResponseParser:
    """A `StreamParser` for one Gemini stream."""

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id = ""
        self.upstream_model = ""
        self.created = int(time.time())  # Gemini does not say when; the call started now
        self.usage: UsageMetadata | None = None
        self.finish_reasons: dict[int, str] = {}
        self.calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self.role_sent: set[int] = set()

    def feed(self, event: str | None, data: str) -> list[Delta]:
        try:
            chunk = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream event is not JSON: {exc}") from exc
        if chunk.error is not None:
            status = chunk.error.code if 400 <= chunk.error.code <= 599 else 500
            raise error_from_detail(status, chunk.error, {}, provider=self.provider)
        if not self.id:
            self.id, self.upstream_model = chunk.response_id, chunk.model_version
        if chunk.usage_metadata is not None:
            self.usage = chunk.usage_metadata  # cumulative: the last one counts
        feedback = chunk.prompt_feedback
        if not chunk.candidates and feedback is not None and feedback.block_reason:
            raise blocked_or_empty(chunk, self.provider)
        deltas: list[Delta] = []
        for candidate in chunk.candidates:
            index = candidate.index
            for part in candidate.content.parts if candidate.content is not None else ():
                if part.function_call is not None:
                    call = part.function_call
                    number = self.calls[index] = self.calls.get(index, 0) + 1
                    start = ToolCallDelta(
                        index=number - 1,
                        id=tool_call_id(call),
                        type="function",
                        function=FunctionCallDelta(name=call.name, arguments=bytes(call.args).decode()),
                    )
                    deltas.append(self._first(Delta(index=index, tool_calls=[start])))
                elif part.text and not part.thought:
                    deltas.append(self._first(Delta(index=index, content=part.text)))
            if candidate.finish_reason is not None and index not in self.finish_reasons:
                reason = finish_reason(candidate.finish_reason, index in self.calls)
                self.finish_reasons[index] = reason
                deltas.append(self._first(Delta(index=index, finish_reason=reason)))
        return deltas

    def end(self) -> StreamSummary:
        if not self.finish_reasons:
            raise stream_truncated(self.provider, "a finishReason")
        reasons = self.finish_reasons
        return StreamSummary(
            id=self.id or f"chatcmpl-{uuid.uuid4().hex}",
            model=self.upstream_model or self.model,
            created=self.created,
            finish_reason=reasons.get(0) or next(iter(reasons.values())),
            usage=unified_usage(self.usage) if self.usage is not None else None,
        )

    def _first(self, delta: Delta) -> Delta:
        # OpenAI clients expect the role in each choice's first chunk.
        if delta.index not in self.role_sent:
            delta.role = "assistant"
            self.role_sent.add(delta.index)
        return delta
