"""Slow and oversized clients at the HTTP layer: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither how long a request may take to arrive nor how large its head may be (its
`h11_max_incomplete_event_size` applies to the h11 parser only; we run httptools). Without them a client
that sends half a request and waits holds a connection forever, and an 8 MiB header block is read in
full. Here, as nginx does it: the head must arrive within `client_header_timeout_seconds` of its first
byte (or of the connection's opening), the body may not pause longer than `client_body_timeout_seconds`
between two reads, and the head may not exceed `max_header_bytes` (431).

A request's handler hears of its client's leaving from the connection itself (`Departure`): uvicorn
tells only a handler waiting in `receive()`, which would need a task per request just to wait there.

And one saving: uvicorn writes a response's head and its body in two `transport.write` calls, and uvloop
sends each at once, so every JSON answer cost two `send()` system calls and two TCP segments. A response's
writes are gathered (`_Gathered`): alone, its head leaves with its body; while other requests are being
served, at the end of the event loop's turn, with theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.config import IngressConfig

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}

# The ASGI scope key of a request's `Departure` (set for every request this protocol serves).
DEPARTURE = "llm_edge.departure"


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 15.0
    max_head: ClassVar[int] = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._timing_head = False  # the armed timer is the head's (it runs from the head's first byte)
        self._in_message = False  # a request has begun and not yet fully arrived
        self._in_head = True
        self._head_bytes = 0
        self._gathered: _Gathered | None = None
        self._departure = Departure()

    # Timers only for a request still incomplete after a read: most requests arrive whole in one read and
    # then cost no timer at all (a call_later and a cancel per request were 15-25 % of hit throughput at
    # c=64, docs/PERFORMANCE.md).

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, head=True)  # a connection that never sends a request closes too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message, self._in_head, self._head_bytes = True, True, 0

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        in_head = self._in_head
        super().data_received(data)
        if in_head and self._in_head:  # still no complete head: all of it was head
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, f"The request head is larger than {self.max_head} bytes.")
                return
        if self._in_message:
            if not self._in_head:
                self._arm(self.body_timeout, head=False)  # the body may pause this long between two reads
            elif not (self._timer is not None and self._timing_head):  # the head's clock starts once
                self._arm(self.header_timeout, head=True)
        elif self._timer is None:
            self._idle()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        self._gathered = _Gathered(self.transport, self.loop, self.tasks)
        self.cycle.transport = self._gathered  # type: ignore[assignment]
        self.cycle.scope[DEPARTURE] = self._departure  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        self._in_message = False
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._gathered is not None:
            self._gathered.pending.clear()  # nobody left to send it to
        super().connection_lost(exc)
        self._departure.left()

    def _idle(self) -> None:
        """After a read that left no request incomplete: if no answer is pending either, the connection is
        idle and its keep-alive timer must run. uvicorn cancels that timer on every read and arms it again
        only when an answer completes, so a read that completes no request of its own (the rest of a body
        whose answer has already left, such as a 413 sent on its `content-length`; a stray CRLF) would
        leave the connection with no timer at all: open until the client closes it, and a drain waiting
        for it to its grace period's end (what failed `test_ctrl_c_stops_everything`)."""
        if self.timeout_keep_alive_task is None and not self.pipeline and (
            self.cycle is None or self.cycle.response_complete
        ):
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    # --- timers -------------------------------------------------------------------------------------

    def _arm(self, seconds: float, *, head: bool) -> None:
        self._disarm()
        self._timing_head = head
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


class Departure:
    """A connection's client leaving, told to the one handler that asked (`watch`). A connection serves one
    request at a time (uvicorn queues a pipelined one until the answer before it is out), so one per
    connection. Replaces a task per request that waited in `receive()` for `http.disconnect` (a task, its
    two steps and its cancellation cost more than the wait they bought)."""

    __slots__ = ("callback", "gone")

    def __init__(self) -> None:
        self.callback: Callable[[], object] | None = None
        self.gone = False

    def watch(self, callback: Callable[[], object]) -> bool:
        """Call `callback` when the client leaves; False (and no call) if it already has."""
        if self.gone:
            return False
        self.callback = callback
        return True

    def unwatch(self) -> None:
        self.callback = None

    def left(self) -> None:
        self.gone = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


class _Gathered:
    """The transport as one response's cycle sees it. Its first write (the head) is held. When no other
    request is being served, the next write (the body, or a stream's first event) sends both at once: one
    system call and one segment fewer, and nothing waits. While others are being served, what it writes
    leaves at the end of the event loop's turn, in one `write`: the answers of one turn reach their clients
    together, the clients' next requests arrive together, and each wake-up of the ingress serves more of
    them (measured with `bench/ab_processes.py --hits`: at c=64, 4,200–4,550 hits/s against 2,750–3,700
    when each answer left at once; at c=1 that wait cost 0.1 ms, hence the exception when alone).

    uvicorn's cycle only writes, closes and asks `is_closing` (checked against uvicorn 0.54); closing sends
    what is held first."""

    __slots__ = ("busy", "loop", "pending", "started", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, busy: set[Any]) -> None:
        self.transport, self.loop = transport, loop
        self.busy = busy  # uvicorn's requests in flight (its `server_state.tasks`), this one included
        self.pending: list[bytes] = []
        self.started = False

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)
        if self.started and len(self.busy) <= 1:
            self.flush()
        self.started = True

    def flush(self) -> None:
        if self.pending:
            data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
            self.pending.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


def guarded(settings: IngressConfig) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn, with this ingress's limits."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {
        "header_timeout": settings.client_header_timeout_seconds,
        "body_timeout": settings.client_body_timeout_seconds,
        "max_head": settings.max_header_bytes,
    })
