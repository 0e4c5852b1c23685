"""An incremental Server-Sent Events decoder (WHATWG HTML, "Parsing an event stream"): bytes in, events out.

Chunks may be split anywhere, inside a UTF-8 sequence or between `\\r` and `\\n`. Each complete event comes
back as `(event name or None, data)`, its `data:` lines joined by `\\n`.
"""

from __future__ import annotations

import codecs

Event = tuple[str | None, str]


class SSEDecoder:
    """One per response body. `feed` returns the events that chunk completed, in order."""

    __slots__ = ("_data", "_decoder", "_event", "_pending", "_skip_lf")

    def __init__(self) -> None:
        # utf-8-sig: the spec strips one leading BOM, even one split across chunks; bad bytes become U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending: list[str] = []  # the start of a line whose end has not arrived yet
        self._skip_lf = False  # the last chunk ended in "\r": a "\n" opening the next one ends no line
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._pending.append(text)
            return []
        if self._pending:
            self._pending.append(text)
            text = "".join(self._pending)
            self._pending.clear()
        lines = text.split("\n")
        if rest := lines.pop():
            self._pending.append(rest)
        return self._lines(lines)

    def _lines(self, lines: list[str]) -> list[Event]:
        events: list[Event] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line dispatches the event, if it has any data
                if data:
                    events.append((self._event or None, "\n".join(data)))
                    data.clear()
                self._event = ""
                continue
            name, _, value = line.partition(":")
            if not name:
                continue  # a comment
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event = value
            # `id` and `retry` only matter to a client that reconnects, and a half-generated answer
            # cannot be resumed; any other field is ignored, as the spec says.
        return events
