"""Putting a request's values back into its answer (`redact_restore`): placeholders in the answer's text and
tool calls become the values they stand for, and a stream's text is held back while it may end in part of a
placeholder, so one split across chunks is still restored.

Thinking (Anthropic's blocks, Responses' reasoning items) keeps its placeholders: the provider signs it and
checks the signature when the client sends it back in the next turn's history.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import UNSET

from shared.messages import ChatResult, Choice, FunctionCall, ResponseMessage
from shared.pii.kinds import LABELS

_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(LABELS.values()) + r")_\d{1,6}\]")
_PLACEHOLDER_BYTES = re.compile(_PLACEHOLDER.pattern.encode())
_LONGEST = max(len(label) for label in LABELS.values()) + len("[_999999]")
_SEALED_TYPES = frozenset({"thinking", "redacted_thinking", "reasoning"})
_json = msgspec.json.Encoder()


class Restorer:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values  # placeholder -> value

    def _value(self, match: re.Match[str]) -> str:
        return self.values.get(match.group(), match.group())

    def text(self, text: str) -> str:
        return _PLACEHOLDER.sub(self._value, text) if "[" in text else text

    def json(self, data: bytes) -> bytes:
        """A JSON document (an Anthropic answer's content blocks, Responses output items) with its strings
        restored, sealed blocks left alone."""
        if not _PLACEHOLDER_BYTES.search(data):
            return data
        return _json.encode(self._walk(msgspec.json.decode(data)))

    def _walk(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, list):
            return [self._walk(item) for item in node]
        if isinstance(node, dict):
            if node.get("type") in _SEALED_TYPES:
                return node
            return {key: self._walk(value) for key, value in node.items()}
        return node

    def result(self, result: ChatResult) -> ChatResult:
        """A whole answer (from the provider or the cache) with the values back in."""
        choices = [self._choice(c) for c in result.choices]
        output = result.responses_output
        return msgspec.structs.replace(result, choices=choices,
                                       responses_output=None if output is None else self.json(output))

    def _choice(self, choice: Choice) -> Choice:
        message = choice.message
        changes: dict[str, object] = {}
        if message.content is not None:
            changes["content"] = self.text(message.content)
        if isinstance(message.refusal, str):
            changes["refusal"] = self.text(message.refusal)
        if message.tool_calls is not UNSET:
            changes["tool_calls"] = [
                msgspec.structs.replace(call, function=FunctionCall(
                    name=call.function.name, arguments=self.text(call.function.arguments)))
                for call in message.tool_calls
            ]
        if isinstance(message.content_json, bytes):
            changes["content_json"] = self.json(message.content_json)
        restored: ResponseMessage = msgspec.structs.replace(message, **changes)
        return msgspec.structs.replace(choice, message=restored)

    def holdback(self) -> Holdback:
        return Holdback(self)


class Holdback:
    """One stream of text (a choice's content, a tool call's arguments) restored piece by piece: the end of a
    piece that could be the start of a placeholder waits for the next piece (or `flush`)."""

    def __init__(self, restorer: Restorer) -> None:
        self.restorer = restorer
        self.pending = ""

    def feed(self, piece: str) -> str:
        text = self.pending + piece if self.pending else piece
        cut = _partial_start(text)
        self.pending = text[cut:]
        return self.restorer.text(text[:cut])

    def flush(self) -> str:
        pending, self.pending = self.pending, ""
        return pending  # not a whole placeholder: what it is


_PARTIAL = re.compile(r"\[([A-Z]*)(?:_(\d*))?")


def _partial_start(text: str) -> int:
    """Where a possible unfinished placeholder begins at the end of `text` (len(text) when there is none)."""
    at = text.rfind("[", max(0, len(text) - _LONGEST))
    if at < 0:
        return len(text)
    tail = _PARTIAL.fullmatch(text, at)
    if tail is None:
        return len(text)
    label, number = tail.group(1), tail.group(2)
    if number is None:
        return at if any(full.startswith(label) for full in LABELS.values()) else len(text)
    return at if label in LABELS.values() and len(number) <= 6 else len(text)
