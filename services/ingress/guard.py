"""Slow and oversized clients at the HTTP layer: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither how long a request may take to arrive nor how large its head may be (its
`h11_max_incomplete_event_size` applies to the h11 parser only; we run httptools). Without them a client
that sends half a request and waits holds a connection forever, and an 8 MiB header block is read in
full. Here, as nginx does it: the head must arrive within `client_header_timeout_seconds` of its first
byte (or of the connection's opening), the body may not pause longer than `client_body_timeout_seconds`
between two reads, and the head may not exceed `max_header_bytes` (431).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.config import IngressConfig

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 15.0
    max_head: ClassVar[int] = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    # --- the request's head -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, head=True)  # a connection that never sends a request closes too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._timer is None:  # the next request on a keep-alive connection: its first byte is here
            self._arm(self.header_timeout, head=True)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        in_head = self._in_head
        super().data_received(data)
        if in_head and self._in_head:  # still no complete head: all of it was head
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, f"The request head is larger than {self.max_head} bytes.")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.body_timeout, head=False)
        super().on_headers_complete()

    # --- the body -----------------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._arm(self.body_timeout, head=False)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- timers -------------------------------------------------------------------------------------

    def _arm(self, seconds: float, *, head: bool) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, head)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, head: bool) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if head:  # no handler runs yet: the client can be told
            self._refuse(408, "The request did not arrive in time.")
        else:  # the handler reads the body: it sees the client gone (a 499, not an error of ours)
            self.transport.close()

    def _refuse(self, status: int, text: str) -> None:
        self._disarm()
        body = text.encode()
        self.transport.write(b"HTTP/1.1 %d %b\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%b" % (status, _REASONS[status], len(body), body))
        self.transport.close()


def guarded(settings: IngressConfig) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn, with this ingress's limits."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {
        "header_timeout": settings.client_header_timeout_seconds,
        "body_timeout": settings.client_body_timeout_seconds,
        "max_head": settings.max_header_bytes,
    })
