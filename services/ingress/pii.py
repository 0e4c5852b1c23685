"""PII at the edge: which mode a request gets (its key's, its model's, the default), the request redacted or
refused before the cache lookup and the bus hop, and (`redact_restore`) the values put back into the answer,
streams included. The values and the map that restores them never leave this process; logs and metrics see
kinds and counts only.

The cache key is computed over the redacted request, so an answer cached for it holds placeholders, never the
values, and is shared only within the tenant's namespace like any other. Two requests that differ only in
their values (another email in the same place) redact to the same text and share the cached answer; each
restores its own values into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from services.ingress.auth import Grant
from services.ingress.parse import bus_payload
from services.ingress.stream import Writer
from shared import metrics
from shared.config import Config, ConfigError, PiiMode
from shared.errors import GatewayError, InvalidRequest
from shared.messages import ChatRequest, ChatResult, FunctionCallDelta, StreamChunk, StreamEnd, ToolCallDelta
from shared.pii.redact import Redactor
from shared.pii.request import redact_request
from shared.pii.restore import Holdback, Restorer

if TYPE_CHECKING:  # phonenumbers costs ~0.2 s to import: only a gateway that redacts loads it
    from shared.pii.detect import Detector

_STRICTNESS: dict[PiiMode, int] = {"off": 0, "redact_restore": 1, "redact": 2, "block": 3}
# Bodies up to this are scanned on the event loop (about 4 ms at most); larger ones on a thread, which costs a
# hop but lets the loop serve other requests meanwhile (the GIL is handed over every few milliseconds).
_INLINE_BYTES = 64 * 1024


class Policy:
    """The modes configured for keys and models, and the detector they share."""

    def __init__(self, config: Config) -> None:
        self.settings = config.pii
        self.models: dict[str, PiiMode] = {r.name: r.pii for r in config.models if r.pii is not None}
        self._detector: Detector | None = None
        used = [config.pii.mode, *self.models.values(), *(k.pii for k in config.keys if k.pii is not None)]
        if any(mode != "off" for mode in used):
            self.detector()  # at start: a bad region fails the start, and no request pays for the import

    def detector(self) -> Detector:
        if self._detector is None:
            import phonenumbers

            from shared.pii.detect import Detector

            if self.settings.phone_region not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(f"pii.phone_region: {self.settings.phone_region!r} is not a region phonenumbers "
                                  "knows")
            self._detector = Detector(self.settings.kinds, self.settings.phone_region)
        return self._detector

    def mode(self, grant: Grant | None, model: str) -> PiiMode:
        """The key's or the model's own mode, the stricter if both are set; otherwise the default."""
        key = None if grant is None else grant.key.pii
        route = self.models.get(model)
        if key is None or route is None:
            return key or route or self.settings.mode
        return key if _STRICTNESS[key] >= _STRICTNESS[route] else route

    async def redact(self, chat: ChatRequest, grant: Grant | None) -> tuple[ChatRequest, Restorer | None]:
        """`apply`, on a worker thread for a large request: its ~60 µs of detection a KB would otherwise hold
        the event loop, and every other request on it, for as long. Its size is its bus encoding's (a Responses
        turn carries its stored history; msgspec encodes ~1 GB/s, noise beside the detection)."""
        if self.mode(grant, chat.model) == "off" or len(bus_payload(chat)) <= _INLINE_BYTES:
            return self.apply(chat, grant)
        return await asyncio.to_thread(self.apply, chat, grant)

    def apply(self, chat: ChatRequest, grant: Grant | None) -> tuple[ChatRequest, Restorer | None]:
        """The request as the provider may see it, and what restores the answer (`redact_restore` only).

        Raises InvalidRequest (a 400 naming the kinds, never the values) in `block` mode."""
        mode = self.mode(grant, chat.model)
        if mode == "off":
            return chat, None
        redactor = Redactor(self.detector())
        redacted = redact_request(chat, redactor)
        if not redactor.found:
            return chat, None
        counts = redactor.counts()
        for kind, count in counts.items():
            metrics.PII_DETECTIONS.labels(kind, mode).inc(count)
        if mode == "block":
            raise refused(sorted(counts))
        return redacted, Restorer(redactor.values()) if mode == "redact_restore" else None


def refused(kinds: list[str]) -> GatewayError:
    return InvalidRequest(
        f"The request contains personal data or secrets that this gateway does not send to a model provider: "
        f"{', '.join(kinds)}. Remove them and try again.", code="pii_detected")


def restoring_render(render: Callable[[ChatResult], bytes], restorer: Restorer | None
                     ) -> Callable[[ChatResult], bytes]:
    """A renderer of whole answers that puts the values back first."""
    if restorer is None:
        return render
    return lambda result: render(restorer.result(result))


def restoring_writer(writer: Callable[[StreamChunk], Writer], restorer: Restorer | None
                     ) -> Callable[[StreamChunk], Writer]:
    """A stream writer's factory whose writers put the values back."""
    if restorer is None:
        return writer
    return lambda first: RestoringWriter(writer(first), restorer)


class RestoringWriter:
    """A dialect's stream writer behind a restorer: each choice's text and each tool call's arguments go
    through their own `Holdback`. Text held back is sent before any frame of another slot (so blocks stay in
    order), before the finish, and before the end or an error."""

    def __init__(self, inner: Writer, restorer: Restorer) -> None:
        self.inner = inner
        self.restorer = restorer
        self.slots: dict[tuple[int, int], Holdback] = {}  # (choice, tool call or -1) -> its holdback

    def chunk(self, frame: StreamChunk) -> bytes:
        index, final = frame.index, frame.finish_reason is not None
        touched = {(index, -1)} if frame.content else set()
        touched.update((index, call.index) for call in frame.tool_calls or () if _arguments(call) is not None)
        # This choice's other slots are done (the text stopped, the next tool call began): out with their text.
        out = [self._flush(slot) for slot in list(self.slots) if slot[0] == index and slot not in touched]
        changes: dict[str, object] = {}
        if frame.content:
            changes["content"] = self._feed((index, -1), frame.content, final)
        if frame.tool_calls:
            changes["tool_calls"] = [self._call(index, call, final) for call in frame.tool_calls]
        out.append(self.inner.chunk(msgspec.structs.replace(frame, **changes) if changes else frame))
        return b"".join(out)

    def end(self, frame: StreamEnd) -> bytes:
        return b"".join([*(self._flush(slot) for slot in list(self.slots)), self.inner.end(frame)])

    def error(self, error: GatewayError) -> bytes:
        return b"".join([*(self._flush(slot) for slot in list(self.slots)), self.inner.error(error)])

    def _feed(self, slot: tuple[int, int], piece: str, final: bool) -> str:
        """`piece` restored, less what may be the start of a placeholder; all of it on the choice's last frame."""
        if (holdback := self.slots.get(slot)) is None:
            holdback = self.slots[slot] = self.restorer.holdback()
        text = holdback.feed(piece)
        return text + self.slots.pop(slot).flush() if final else text

    def _call(self, index: int, call: ToolCallDelta, final: bool) -> ToolCallDelta:
        if not isinstance(function := call.function, FunctionCallDelta) or not isinstance(function.arguments, str):
            return call
        arguments = self._feed((index, call.index), function.arguments, final)
        return msgspec.structs.replace(call, function=msgspec.structs.replace(function, arguments=arguments))

    def _flush(self, slot: tuple[int, int]) -> bytes:
        """The text a slot holds back, as a frame of its own (nothing when it holds none)."""
        pending = self.slots.pop(slot).flush()
        if not pending:
            return b""
        index, tool = slot
        if tool < 0:
            return self.inner.chunk(StreamChunk(seq=-1, index=index, content=pending))
        delta = ToolCallDelta(index=tool, function=FunctionCallDelta(arguments=pending))
        return self.inner.chunk(StreamChunk(seq=-1, index=index, tool_calls=[delta]))


def _arguments(call: ToolCallDelta) -> str | None:
    function = call.function
    return function.arguments if isinstance(function, FunctionCallDelta) and isinstance(function.arguments, str) \
        else None
