"""Deltas -> one complete `ChatResult`: how a streamed answer becomes cacheable."""

from __future__ import annotations

from dataclasses import dataclass, field

from msgspec import UNSET

from services.providers.base import Delta
from shared.messages import ChatResult, Choice, FunctionCall, ResponseMessage, ToolCall, Usage


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


class Assembler:
    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}

    def add(self, delta: Delta) -> None:
        choice = self._choices.get(delta.index)
        if choice is None:
            choice = self._choices[delta.index] = _Choice()
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
            )
            choices.append(Choice(index=index, message=message, finish_reason=choice.finish_reason))
        return ChatResult(
            id=id, created=created, model=model, choices=choices, usage=usage or Usage(),
            provider=provider, target_model=target_model,
        )
