"""The ingress's side of the request log (opt-in, `request_log.enabled`): at each request's completion a
`RequestRecord` is appended to the request-log stream on the bus, without the request waiting for it.

Per model request, a `Tap` sits between the route and the server (`edge.serve`): it sees the status and
content type the client got and, when bodies are kept, the request and response bytes (cut at
`max_body_bytes`, configured secrets redacted). Everything else comes from the request's `Call`: the key
and tenant, the model, provider, cache result, usage and cost, the error's code.

Where a PII mode applies to the request (its key's, its model's or the default, as services/ingress/pii.py
decides), or `request_log.redact_pii` is set, kept bodies go through the same detector first, before they are
cut: the request body as it went upstream (placeholders where the values were), and the response with
placeholders too, also where `redact_restore` gave the client its values back. The values never reach the log.

When the bus is down, records wait in a bounded queue (`request_log.queue_size`) and are published once it
is back; beyond that the newest are dropped, counted in `llm_edge_request_log_dropped_total`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from starlette.types import Message, Receive, Send

from services.ingress.context import Call
from services.ingress.stream import Writer
from shared import bus, secrets
from shared.bus.journal import Appender, request_log
from shared.config import Config
from shared.errors import GatewayError
from shared.messages import StreamChunk, StreamEnd, Usage
from shared.pii.redact import Redactor
from shared.request_log import RequestRecord, encode, new_id

if TYPE_CHECKING:
    from services.ingress.pii import Policy

DROPPED = Counter("llm_edge_request_log_dropped", "Request records dropped: the bus did not take them in time")


class RequestLog:
    def __init__(self, config: Config, connection: Callable[[], bus.Bus | None], pii: Policy | None = None) -> None:
        settings = config.request_log
        self.bodies = settings.bodies
        self.pii, self.redact_pii = pii, settings.redact_pii
        if pii is not None and self.bodies and self.redact_pii:
            pii.detector()  # at start, as the PII step does: no request pays for the import
        self.max_body = settings.max_body_bytes
        self.redact = secrets.Redactor(secrets.configured(config))
        self.appender = Appender(connection, request_log(config), settings.queue_size, on_drop=DROPPED.inc)

    def tap(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> Tap:
        return Tap(self, scope, receive, send)

    def append(self, record: RequestRecord) -> None:
        self.appender.append(encode(record))

    def personal(self, call: Call) -> Redactor | None:
        """What takes personal data out of this request's bodies; None when no PII mode applies to it."""
        if not self.bodies or self.pii is None:
            return None
        if self.redact_pii or self.pii.mode(call.grant, call.model) != "off":
            return Redactor(self.pii.detector())
        return None

    def text(self, chunks: list[bytes], personal: Redactor | None = None) -> str | None:
        if not self.bodies:
            return None
        body = b"".join(chunks)
        if personal is None:
            return self.redact(body[: self.max_body].decode("utf-8", "replace"))
        # Whole (as collected) before the cut, so a value is found before the cut could split it. Every string
        # of a JSON body is data here (ids and names included); anything else, a stream's events, as text.
        text = personal.arguments(body.decode("utf-8", "replace"))
        return self.redact(text.encode()[: self.max_body].decode("utf-8", "ignore"))

    async def flushed(self) -> None:
        """Until every record appended so far is on the stream."""
        await self.appender.flushed()

    async def close(self) -> None:
        await self.appender.close()


class Tap:
    """One request's view of what went in and out; `done` appends its record."""

    __slots__ = ("arrived", "content_type", "log", "request_chunks", "request_size", "response_chunks",
                 "response_size", "scope", "started", "status", "upstream_receive", "upstream_send")

    def __init__(self, log: RequestLog, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        self.log, self.scope = log, scope
        self.upstream_receive, self.upstream_send = receive, send
        self.arrived = time.time()
        self.started = time.perf_counter()
        self.status: int | None = None
        self.content_type = b""
        self.request_chunks: list[bytes] = []
        self.response_chunks: list[bytes] = []
        self.request_size = self.response_size = 0

    async def receive(self) -> Message:
        message = await self.upstream_receive()
        if self.log.bodies and message["type"] == "http.request" and self.request_size < self.log.max_body:
            chunk = message.get("body", b"")
            self.request_chunks.append(chunk)
            self.request_size += len(chunk)
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name == b"content-type":
                    self.content_type = value
        elif kind == "http.response.body" and self.log.bodies and self.response_size < self.log.max_body:
            chunk = message.get("body", b"")
            self.response_chunks.append(chunk)
            self.response_size += len(chunk)
        await self.upstream_send(message)

    def done(self, call: Call) -> None:
        """The request is over (answered, failed, or its client left): append its record."""
        self.log.append(record(self, call))


class _Noting:
    """A stream's writer that notes, in the request's `Call`, the usage and cost of its end or the code of
    the error that cut it (the status was 200 by then)."""

    __slots__ = ("call", "writer")

    def __init__(self, writer: Writer, call: Call) -> None:
        self.writer, self.call = writer, call

    def chunk(self, frame: StreamChunk) -> bytes:
        return self.writer.chunk(frame)

    def end(self, frame: StreamEnd) -> bytes:
        # A provider that reports no usage still ended the stream properly: zeros, not "incomplete".
        self.call.usage, self.call.cost_usd = frame.usage or Usage(), frame.cost_usd
        return self.writer.end(frame)

    def error(self, error: GatewayError) -> bytes:
        self.call.error = error.code or error.error_type
        return self.writer.error(error)


def noting(writer: Callable[[StreamChunk], Writer], call: Call) -> Callable[[StreamChunk], Writer]:
    """`writer`, its streams' outcome noted for the request's record."""
    return lambda first: _Noting(writer(first), call)


def record(tap: Tap, call: Call) -> RequestRecord:
    """The record of a finished request, from what the tap saw and the request's `Call`."""
    usage = call.usage
    stream = tap.content_type.startswith(b"text/event-stream")
    error = call.error
    personal = tap.log.personal(call)  # one for both bodies: the same value has the same placeholder in each
    if stream and error is None and usage is None and tap.status == 200:
        error = "stream_incomplete"  # neither an end frame nor an error: the client left mid-stream
    return RequestRecord(
        id=new_id(),
        request_id=call.rid or "",
        time=tap.arrived,
        path=str(tap.scope.get("path", "")),
        status=tap.status or 499,  # nothing was sent: the client left before its answer began
        latency_ms=round((time.perf_counter() - tap.started) * 1000, 3),
        key=call.key,
        tenant=call.tenant,
        model=None if call.model == "unresolved" else call.model,
        provider=call.provider,
        stream=stream,
        cache=call.cache,
        prompt_tokens=usage.prompt_tokens if usage is not None else 0,
        completion_tokens=usage.completion_tokens if usage is not None else 0,
        cached_tokens=usage.cache_read_tokens if usage is not None else 0,
        cost_usd=call.cost_usd,
        error=error,
        request_body=tap.log.text(tap.request_chunks, personal),
        response_body=tap.log.text(tap.response_chunks, personal),
    )
