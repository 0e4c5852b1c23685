"""One request's redaction: every value found becomes a placeholder (`[EMAIL_1]`, `[CARD_2]`...), the same
value the same placeholder wherever it appears (the unified messages, a native body, tool calls), numbered per
kind in order of first appearance. What was replaced is kept for the answer's restoration (`values`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from shared.pii.kinds import LABELS, Kind

if TYPE_CHECKING:  # the detector's libraries are heavy to import; the caller brings one
    from shared.pii.detect import Detector

# In a provider's native JSON body, the values that are structure, not text: ids that pair a tool call with its
# result (a placeholder inside one would break the pairing), names, types, signatures over thinking blocks and
# encrypted content that the provider verifies byte for byte, base64 data.
_STRUCTURAL_KEYS = frozenset({
    "type", "role", "id", "tool_use_id", "tool_call_id", "call_id", "model", "name", "signature",
    "encrypted_content", "media_type", "file_id", "file_data", "previous_response_id", "cache_control", "status",
})
# Blocks and items passed back exactly as the provider made them (it checks their signature or decrypts them).
_SEALED_TYPES = frozenset({"thinking", "redacted_thinking", "reasoning"})
# Blocks whose `input` object is a tool's arguments: every value under it is the caller's data, ids included.
_TOOL_USES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

_json = msgspec.json.Encoder()


class Redactor:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.placeholders: dict[str, str] = {}  # value -> placeholder
        self.kinds: dict[str, Kind] = {}  # placeholder -> kind
        self._numbers: dict[Kind, int] = {}
        # text -> redacted text (None: nothing found), as a native body repeats the unified messages
        self._seen: dict[str, str | None] = {}

    @property
    def found(self) -> bool:
        return bool(self.placeholders)

    def values(self) -> dict[str, str]:
        """Placeholder -> the value it stands for."""
        return {placeholder: value for value, placeholder in self.placeholders.items()}

    def counts(self) -> dict[Kind, int]:
        """Distinct values found, by kind."""
        return dict(self._numbers)

    def text(self, text: str) -> str:
        """`text` with its findings replaced; the same object when nothing was found."""
        if text in self._seen:
            return self._seen[text] or text
        findings = self.detector.find(text)
        out: str | None = None
        if findings:
            pieces: list[str] = []
            at = 0
            for finding in findings:
                pieces += (text[at:finding.start], self._placeholder(finding.kind, text[finding.start:finding.end]))
                at = finding.end
            pieces.append(text[at:])
            out = "".join(pieces)
        if len(self._seen) < 4096:
            self._seen[text] = out
        return out or text

    def _placeholder(self, kind: Kind, value: str) -> str:
        if (placeholder := self.placeholders.get(value)) is None:
            number = self._numbers[kind] = self._numbers.get(kind, 0) + 1
            placeholder = self.placeholders[value] = f"[{LABELS[kind]}_{number}]"
            self.kinds[placeholder] = kind
        return placeholder

    def json(self, body: bytes) -> bytes:
        """A provider's native JSON body with its text redacted (structure left alone); the same bytes when
        nothing was found."""
        try:
            tree = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return body  # not ours to judge: the gateway parsed it already; the provider will say
        redacted, changed = self._walk(tree, free=False)
        return _json.encode(redacted) if changed else body

    def arguments(self, arguments: str) -> str:
        """A tool call's arguments (JSON text): every string in them is data; text when not JSON."""
        try:
            tree = msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            return self.text(arguments)
        redacted, changed = self._walk(tree, free=True)
        return _json.encode(redacted).decode() if changed else arguments

    def _walk(self, node: Any, free: bool) -> tuple[Any, bool]:
        if isinstance(node, str):
            if node.startswith("data:"):  # a data URL: base64, not text
                return node, False
            out = self.text(node)
            return out, out is not node
        if isinstance(node, list):
            changed = False
            items = []
            for item in node:
                new, moved = self._walk(item, free)
                items.append(new)
                changed |= moved
            return items, changed
        if isinstance(node, dict):
            return self._walk_object(node, free)
        return node, False

    def _walk_object(self, node: dict[str, Any], free: bool) -> tuple[dict[str, Any], bool]:
        if not free and node.get("type") in _SEALED_TYPES:
            return node, False
        base64 = node.get("type") == "base64"
        changed = False
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not free and (key in _STRUCTURAL_KEYS or (base64 and key == "data")):
                out[key] = value
                continue
            if key == "arguments" and isinstance(value, str):  # a function call's, as JSON text
                new: Any = self.arguments(value)
                moved = new is not value
            else:
                new, moved = self._walk(value, free or (key == "input" and node.get("type") in _TOOL_USES))
            out[key] = new
            changed |= moved
        return out, changed
