"""The Responses API's event stream, written from the unified stream frames: `response.created`,
`response.in_progress`, per output item `response.output_item.added` … `.done` (text through
`content_part` and `output_text` events, function calls through `function_call_arguments`, custom tool
calls through `custom_tool_call_input`), then `response.completed` or `response.incomplete`. Every event
carries a `sequence_number`. A failure ends it with `error` and `response.failed`, never `response.completed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.ingress.anthropic_events import frames_of
from services.ingress.responses_dialect import (
    INCOMPLETE,
    ErrorInfo,
    OutCustomToolCall,
    OutFunctionCall,
    OutMessage,
    OutputItem,
    OutputText,
    Turn,
    new_id,
    response_of,
)
from services.ingress.responses_items import ToolName, custom_input
from shared.errors import GatewayError
from shared.messages import ChatResult, FunctionCallDelta, StreamChunk, StreamEnd, ToolCallDelta

_json = msgspec.json.Encoder()


@dataclass(slots=True)
class _Text:
    index: int
    id: str
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    call_id: str
    name: ToolName
    pieces: list[str] = field(default_factory=list)


class EventWriter:
    """A `stream.Writer` for the Responses API: frames in, typed SSE events out."""

    def __init__(self, turn: Turn, model: str) -> None:
        self.turn, self.model = turn, model
        self.seq = 0
        self.started = False
        self.output: list[OutputItem | msgspec.Raw | None] = []  # by output index; None while the item is open
        self.text: _Text | None = None
        self.calls: dict[int, _Call] = {}  # unified tool call index -> its open item
        self.finish_reason: str | None = None
        self.final: bytes | None = None  # the finished Response object, for the store

    def _event(self, out: list[bytes], kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + _json.encode(data) + b"\n\n")

    def _start(self, out: list[bytes]) -> None:
        self.started = True
        response = response_of(self.turn, self.model, [], "in_progress", None)
        self._event(out, "response.created", response=response)
        self._event(out, "response.in_progress", response=response)

    def chunk(self, frame: StreamChunk) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self._start(out)
        if frame.item_json is not None:  # a whole item from a provider's own Responses API (reasoning)
            self._close_text(out)
            item = msgspec.Raw(frame.item_json)
            self.output.append(item)
            self._event(out, "response.output_item.added", output_index=len(self.output) - 1, item=item)
            self._event(out, "response.output_item.done", output_index=len(self.output) - 1, item=item)
        if frame.content:
            text = self.text or self._open_text(out)
            text.pieces.append(frame.content)
            self._event(out, "response.output_text.delta", item_id=text.id, output_index=text.index, content_index=0,
                        delta=frame.content, logprobs=[])
        for call in frame.tool_calls or ():
            self._call(out, call)
        if frame.finish_reason is not None:
            self.finish_reason = frame.finish_reason
        return b"".join(out)

    def end(self, frame: StreamEnd) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self._start(out)
        self._close_all(out)
        reason = frame.finish_reason or self.finish_reason
        output = [item for item in self.output if item is not None]
        response = response_of(self.turn, frame.model or self.model, output, "completed", frame.usage, reason)
        self.final = _json.encode(response)
        self._event(out, "response.incomplete" if response.status == "incomplete" else "response.completed",
                    response=response)
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self._start(out)
        code = error.code or ("server_error" if error.http_status >= 500 else "invalid_request")
        self._event(out, "error", code=code, message=error.message, param=error.param)
        output = [item for item in self.output if item is not None]
        # A failed response's `error.code` is one of OpenAI's fixed few: what a client may act on (Codex
        # waits and retries on `rate_limit_exceeded`); the `error` event above carries the gateway's own code.
        failed = "rate_limit_exceeded" if error.http_status == 429 else "server_error"
        response = response_of(self.turn, self.model, output, "failed", None,
                               error=ErrorInfo(code=failed, message=error.message))
        self._event(out, "response.failed", response=response)
        return b"".join(out)

    # --- items ---

    def _open_text(self, out: list[bytes]) -> _Text:
        self.text = _Text(len(self.output), new_id("msg"))
        self.output.append(None)
        item = OutMessage(id=self.text.id, status="in_progress", content=[])
        self._event(out, "response.output_item.added", output_index=self.text.index, item=item)
        self._event(out, "response.content_part.added", item_id=self.text.id, output_index=self.text.index,
                    content_index=0, part=OutputText(text=""))
        return self.text

    def _close_text(self, out: list[bytes]) -> None:
        text, self.text = self.text, None
        if text is None:
            return
        whole = "".join(text.pieces)
        part = OutputText(text=whole)
        self._event(out, "response.output_text.done", item_id=text.id, output_index=text.index, content_index=0,
                    text=whole, logprobs=[])
        self._event(out, "response.content_part.done", item_id=text.id, output_index=text.index, content_index=0,
                    part=part)
        status = "incomplete" if self.finish_reason in INCOMPLETE else "completed"
        item = OutMessage(id=text.id, status=status, content=[part])
        self.output[text.index] = item
        self._event(out, "response.output_item.done", output_index=text.index, item=item)

    def _call(self, out: list[bytes], delta: ToolCallDelta) -> None:
        function = delta.function if isinstance(delta.function, FunctionCallDelta) else FunctionCallDelta()
        call = self.calls.get(delta.index)
        if call is None:
            self._close_text(out)
            unified = function.name if isinstance(function.name, str) else ""
            name = self.turn.toolbox.named(unified)
            call_id = delta.id if isinstance(delta.id, str) else new_id("call")
            call = _Call(len(self.output), new_id("ctc" if name.kind == "custom" else "fc"), call_id, name)
            self.calls[delta.index] = call
            self.output.append(None)
            if name.kind == "function":  # a custom tool's input is known only whole (see `_close_call`)
                self._event(out, "response.output_item.added", output_index=call.index,
                            item=self._function(call, "", "in_progress"))
        if isinstance(function.arguments, str) and function.arguments:
            call.pieces.append(function.arguments)
            if call.name.kind == "function":
                self._event(out, "response.function_call_arguments.delta", item_id=call.id, output_index=call.index,
                            delta=function.arguments)

    def _function(self, call: _Call, arguments: str, status: str) -> OutFunctionCall:
        namespace = call.name.namespace if call.name.namespace is not None else msgspec.UNSET
        return OutFunctionCall(id=call.id, call_id=call.call_id, name=call.name.name, arguments=arguments,
                               status=status, namespace=namespace)

    def _custom(self, call: _Call, value: str, status: str) -> OutCustomToolCall:
        namespace = call.name.namespace if call.name.namespace is not None else msgspec.UNSET
        return OutCustomToolCall(id=call.id, call_id=call.call_id, name=call.name.name, input=value, status=status,
                                 namespace=namespace)

    def _close_call(self, out: list[bytes], call: _Call) -> None:
        arguments = "".join(call.pieces)
        item: OutFunctionCall | OutCustomToolCall
        if call.name.kind == "function":
            self._event(out, "response.function_call_arguments.done", item_id=call.id, output_index=call.index,
                        name=call.name.name, arguments=arguments)
            item = self._function(call, arguments, "completed")
        else:
            # The model wrote `{"input": …}` JSON (see responses_items); only the whole of it can be unwrapped.
            value = custom_input(arguments)
            self._event(out, "response.output_item.added", output_index=call.index,
                        item=self._custom(call, "", "in_progress"))
            self._event(out, "response.custom_tool_call_input.delta", item_id=call.id, output_index=call.index,
                        delta=value)
            self._event(out, "response.custom_tool_call_input.done", item_id=call.id, output_index=call.index,
                        input=value)
            item = self._custom(call, value, "completed")
        self.output[call.index] = item
        self._event(out, "response.output_item.done", output_index=call.index, item=item)

    def _close_all(self, out: list[bytes]) -> None:
        self._close_text(out)
        for call in sorted(self.calls.values(), key=lambda c: c.index):
            self._close_call(out, call)
        self.calls.clear()


def replay(result: ChatResult, turn: Turn) -> tuple[bytes, bytes]:
    """A cached answer as a real event stream with exactly its text and tool calls; and the Response."""
    chunks, end = frames_of(result)
    writer = EventWriter(turn, result.model)
    events = b"".join([*(writer.chunk(c) for c in chunks), writer.end(end)])
    assert writer.final is not None
    return events, writer.final
