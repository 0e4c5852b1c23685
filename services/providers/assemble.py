"""Deltas -> one complete `ChatResult`: how a streamed answer becomes cacheable."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from msgspec import UNSET

from services.providers.base import Delta
from shared.messages import ChatResult, Choice, FunctionCall, ResponseMessage, ThinkingBlock, ToolCall, Usage


class _ServerDelta(msgspec.Struct):
    type: str = ""
    partial_json: str = ""


_server_delta = msgspec.json.Decoder(_ServerDelta)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    finish_reason: str | None = None
    thinking: list[ThinkingBlock] = field(default_factory=list)  # closed blocks
    open_thinking: list[str] | None = None  # the text of the thinking block not yet signed
    server: list[tuple[bytes, list[str]]] = field(default_factory=list)  # server blocks, their input's JSON

    def serve(self, delta: Delta) -> None:
        if delta.server_block is not None:
            self.server.append((delta.server_block, []))
        elif delta.server_delta is not None and self.server:
            part = _server_delta.decode(delta.server_delta)
            if part.type == "input_json_delta":
                self.server[-1][1].append(part.partial_json)

    def server_blocks(self) -> list[bytes]:
        """Each server block whole: a streamed input (a server tool's use) set from its deltas."""
        blocks = []
        for block, parts in self.server:
            if parts:
                fields = _fields.decode(block)
                fields["input"] = msgspec.Raw("".join(parts).encode() or b"{}")
                block = _encoder.encode(fields)
            blocks.append(block)
        return blocks

    def think(self, delta: Delta) -> None:
        if delta.redacted_thinking is not None:
            self.thinking.append(ThinkingBlock(type="redacted_thinking", data=delta.redacted_thinking))
        if delta.thinking:
            (self.open_thinking if self.open_thinking is not None else self._open()).append(delta.thinking)
        if delta.signature is not None:
            text = "".join(self.open_thinking or ())
            self.thinking.append(ThinkingBlock(thinking=text, signature=delta.signature))
            self.open_thinking = None

    def _open(self) -> list[str]:
        self.open_thinking = []
        return self.open_thinking


class Assembler:
    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}

    def add(self, delta: Delta) -> None:
        choice = self._choices.get(delta.index)
        if choice is None:
            choice = self._choices[delta.index] = _Choice()
        if delta.thinking or delta.signature is not None or delta.redacted_thinking is not None:
            choice.think(delta)
        if delta.server_block is not None or delta.server_delta is not None:
            choice.serve(delta)
        if delta.content:
            choice.content.append(delta.content)
        for part in delta.tool_calls or ():
            call = choice.calls.setdefault(part.index, _Call())
            if isinstance(part.id, str):
                call.id = part.id
            if part.function is not UNSET:
                if isinstance(part.function.name, str):
                    call.name += part.function.name
                if isinstance(part.function.arguments, str):
                    call.arguments.append(part.function.arguments)
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason

    def result(
        self, *, id: str, created: int, model: str, usage: Usage | None, provider: str, target_model: str
    ) -> ChatResult:
        choices = []
        for index in sorted(self._choices) or [0]:
            choice = self._choices.get(index, _Choice())
            calls = [
                ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments="".join(call.arguments)))
                for _, call in sorted(choice.calls.items())
            ]
            message = ResponseMessage(
                content="".join(choice.content) if choice.content or not calls else None,
                tool_calls=calls or UNSET,
                thinking=choice.thinking or UNSET,
                server_blocks=choice.server_blocks() or UNSET,
            )
            choices.append(Choice(index=index, message=message, finish_reason=choice.finish_reason))
        return ChatResult(
            id=id, created=created, model=model, choices=choices, usage=usage or Usage(),
            provider=provider, target_model=target_model,
        )
