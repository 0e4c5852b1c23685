"""The hot path of the NATS protocol, done leaner than nats-py does it: publishing a message with headers,
reading MSG/HMSG frames, parsing their headers, and handing a message to our own subscriptions.

Why: every message a miss sends or receives crossed nats-py's generic path, about half of the bus's CPU
(py-spy): a regex and two strips per header on publish, two regexes and a `del` of the buffer's front per
frame on receive, a header parser that decodes line by line, and for every message a queue put, a task
wake-up and a queue get before the callback ran. `bench/bus_cpu.py` measures the whole: 120-132 µs of CPU
a request-reply before, 63-89 after. Here:

- `publish` encodes the headers in one join and one encode. Names are checked once each (they are the
  gateway's own); a value with a CR or LF (an injection attempt) takes nats-py's own path, which
  strips it.
- `Parser` reads MSG/HMSG frames with `find` and `split` and consumes the buffer once per read; every
  other operation (INFO, PING, -ERR...) and a frame split across reads go to nats-py's parser.
- `_headers` parses a header block in one decode; a status line (`NATS/1.0 503`) goes to nats-py's.
- `flush` writes what is queued before its PING, which nats-py's own does not.
- `sink` makes a subscription deliver each message by calling a plain function, with no queue and no task
  (nats-py's `future=` subscription, which it resolves with `set_result(msg)`, given an object that calls
  the function instead). The function must not block: the bus's own multiplexer and endpoint admission are
  such functions.
- `Parser.arrived` delivers a sink's whole frames as the bytes arrive, in the transport's callback: not
  copied into nats-py's stream reader, no wake-up of its read-loop task. Whatever else comes (another
  operation, a frame for nats-py's own kind of subscription, a status, a frame split across reads) goes
  to the reader, and what arrives while that is still being read waits its turn behind it, so the order
  holds. A delivery that raises is logged; the connection goes on reading.
- `_Writer` writes what a turn of the event loop published in one call at the turn's end, from a plain
  callback, where nats-py wakes its flusher task through a queue, with a new future each time. While
  the socket is backed up, or the connection is not up, nats-py's flusher does it (it waits for the drain).
  `bench/bus_cpu.py`, two alternating pairs: 63 and 61 µs of CPU a request-reply against 77 and 76 before.

All of it relies on nats-py's private attributes; it is confined to this module, installed by `connect`
on the client before it connects, and `tests/integration/test_bus_wire.py` fails if a nats-py release
changes what it relies on (nats-py is pinned to a tested range in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.transport import TcpTransport
from nats.protocol.parser import AWAITING_CONTROL_LINE
from nats.protocol.parser import Parser as NatsParser

log = logging.getLogger("llm_edge.bus")
_HEADER_LINE = b"NATS/1.0\r\n"
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token, as nats-py checks names
_names_seen: set[str] = set()  # the gateway's own header names, checked once each
_SPACE = re.compile(r"\s")  # in a subject: nats-py refuses it (a CR or LF would be a protocol injection)


def install(nc: Client) -> None:
    """Put the lean parser and header reader in place on a client that has not connected yet."""
    parser = Parser(nc)
    nc._ps = parser
    nc._llm_edge_writer = _Writer(nc)  # type: ignore[attr-defined]
    slow_headers = nc._process_headers

    async def process_headers(block: bytes | None) -> dict[str, str] | None:  # None: a message without headers
        if not block:
            return None
        if block[8:9] == b" ":  # `NATS/1.0 503 ...`: a status, nats-py's business
            return await slow_headers(block)
        return _headers(block)

    nc._process_headers = process_headers  # type: ignore[method-assign,assignment]


def _headers(block: bytes) -> dict[str, str] | None:
    """`NATS/1.0\\r\\nName: value\\r\\n...\\r\\n\\r\\n` as a dict (names and values stripped; a line that is
    not `name: value`, or a name with spaces in it, skipped, as nats-py does)."""
    found: dict[str, str] = {}
    for line in block[10:].decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip()
            if name and name.isascii() and len(name.split()) == 1:
                found[name] = value.strip()
    return found or None


async def publish(nc: Client, subject: str, data: bytes, headers: dict[str, str] | None, reply: str) -> None:
    """`nc.publish(subject, data, reply=reply, headers=headers)`, with the same errors, for less CPU."""
    if not nc.is_connected or nc.is_draining_pubs or not subject or _SPACE.search(subject + reply):
        await nc.publish(subject, data, reply=reply, headers=headers)  # the rare cases: nats-py decides
        return
    size = len(data)
    if size > nc._max_payload:
        raise nats.errors.MaxPayloadError
    if headers:
        if not _names_seen.issuperset(headers):
            if not all(_HEADER_NAME.fullmatch(name) for name in headers):
                await nc.publish(subject, data, reply=reply, headers=headers)  # nats-py's error, or its fix
                return
            _names_seen.update(headers)
        text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if text.count("\n") != len(headers) or text.count("\r") != len(headers):
            await nc.publish(subject, data, reply=reply, headers=headers)  # a value with a line break in it
            return
        block = _HEADER_LINE + text.encode() + b"\r\n"
        command = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), len(block),
                                                      len(block) + size, block, data)
    else:
        command = b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), size, data)
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    nc._pending.append(command)
    nc._pending_data_size += len(command)
    if nc._pending_data_size > nc._max_pending_size > 0:
        await nc._flush_pending(force_flush=True)  # nats-py's bound on what may wait: its own flush
        return
    writer: _Writer = nc._llm_edge_writer  # type: ignore[attr-defined]
    if not writer.due:
        writer.due = True
        asyncio.get_running_loop().call_soon(writer.write)


class _Writer:
    """Writes what a turn of the event loop published in one call at the turn's end, as nats-py's flusher
    task does, but from a plain callback: no task wake-up, no queue, no future per flush. While the socket
    is backed up (bytes still waiting in the transport) or the connection is not up, the flusher takes over
    (it awaits the drain; on a reconnect nats-py writes what is pending itself)."""

    __slots__ = ("due", "nc")

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.due = False

    def write(self) -> None:
        self.due = False
        nc = self.nc
        if not nc._pending or not nc.is_connected:
            return
        transport = nc._transport
        if not isinstance(transport, TcpTransport) or transport._io_writer is None:
            stream = None
        else:
            stream = transport._io_writer.transport
        if stream is not None and not stream.is_closing() and not stream.get_write_buffer_size():
            stream.writelines(nc._pending)
            nc._pending = []
            nc._pending_data_size = 0
        elif nc._flush_queue is not None and nc._flush_queue.empty():
            nc._flush_queue.put_nowait(asyncio.get_running_loop().create_future())


async def flush(nc: Client) -> None:
    """`nc.flush()` as it promises: when it returns, the server has what was sent before it. nats-py writes
    the flush's PING straight to the socket, ahead of the commands still queued for its flusher task (a SUB
    sent a moment earlier), so the PONG can come back before the server has seen them: a subscription
    "flushed" could miss the first messages published to it (about one time in twenty on a new connection,
    `tests/integration/test_bus_wire.py`). Here the queue is written first."""
    await nc._flush_pending(force_flush=True)
    await nc.flush()


class Parser(NatsParser):
    """nats-py's parser with a fast path for whole MSG and HMSG frames (see the module's docstring), and a
    faster one still: frames for our own subscriptions (`sink`) delivered as the bytes arrive (`arrived`)."""

    def __init__(self, nc: Client) -> None:
        super().__init__(nc)
        self.busy = False  # `parse` is running (it may await): whatever arrives meanwhile queues behind it
        self.hooked: object = None  # the stream reader whose arrivals `arrived` sees first

    async def parse(self, data: bytes = b"") -> None:
        self.busy = True
        try:
            await self._parse(data)
        finally:
            self.busy = False
        self._hook()

    async def _parse(self, data: bytes) -> None:
        buf = self.buf
        buf.extend(data)
        if self.state != AWAITING_CONTROL_LINE:
            await super().parse()
            return
        nc = self.nc
        at, end = 0, len(buf)
        while (frame := _frame(buf, at, end)) is not None:
            subject, sid, reply, start, body, stop = frame
            header = bytes(buf[start:body]) if body > start else None
            payload = bytes(buf[body:stop])
            at = stop + 2
            await nc._process_msg(sid, subject, reply, payload, header)
        if at:
            del buf[:at]
        if buf:
            await super().parse()

    def _hook(self) -> None:
        """See the connection's arrivals first (`arrived`), once per stream reader (a reconnect makes a new
        one; TLS too)."""
        transport = self.nc._transport
        reader = transport._io_reader if isinstance(transport, TcpTransport) else None
        if reader is None or reader is self.hooked:
            return
        self.hooked = reader
        queue = reader.feed_data
        queued: bytearray = reader._buffer  # type: ignore[attr-defined]

        def feed_data(data: bytes) -> None:
            if queued or self.busy or self.buf or self.state != AWAITING_CONTROL_LINE \
                    or not self.nc.is_connected or reader is not self.hooked:
                queue(data)  # behind what is already queued: nats-py's read loop, in order
                return
            taken = self.arrived(data)
            if taken < len(data):
                queue(data[taken:])

        reader.feed_data = feed_data  # type: ignore[method-assign,assignment]

    def arrived(self, data: bytes) -> int:
        """Deliver the whole frames at the front of `data` that are for a `sink` subscription, at once, in
        the transport's callback: no copy into the reader, no wake-up of nats-py's read loop task. Stops at
        anything else (another operation, another kind of subscription, a status, a split frame) and says
        how much it took; the rest goes the usual way, in order."""
        nc = self.nc
        subs = nc._subs
        at, end = 0, len(data)
        while (frame := _frame(data, at, end)) is not None:
            subject, sid, reply, start, body, stop = frame
            sub = subs.get(sid)
            sink = sub._future if sub is not None else None
            if type(sink) is not _Sink or sub._max_msgs:
                break  # nats-py's subscription: its own path
            headers = None
            if body > start:
                if data[start + 8:start + 9] == b" ":
                    break  # a status (`NATS/1.0 503`): nats-py's reading of it
                headers = _headers(data[start:body])
            payload = data[body:stop]
            at = stop + 2
            nc.stats["in_msgs"] += 1
            nc.stats["in_bytes"] += len(payload)
            sub._received += 1
            try:
                sink.deliver(nc.msg_class(subject=subject.decode(), reply=reply.decode(), data=payload,
                                          headers=headers, _client=nc, _sid=sid))
            except Exception:  # one message's failure must not take the connection's reading with it
                log.exception("delivering a message on %s failed", subject.decode(errors="replace"))
        return at


def _frame(buf: bytes | bytearray, at: int, end: int) -> tuple[bytes, int, bytes, int, int, int] | None:
    """The MSG or HMSG frame at `at` when all of it is in `buf`: its subject, sid and reply subject, where its
    header block starts, where its payload starts and where it stops (CRLF follows). None for anything else:
    another operation, a frame that continues in the next read, a malformed line (nats-py's parser then
    reads it, and raises its protocol error)."""
    if buf.startswith(b"MSG ", at):
        headed = False
    elif buf.startswith(b"HMSG ", at):
        headed = True
    else:
        return None
    line_end = buf.find(b"\r\n", at)
    if line_end < 0:
        return None
    args = bytes(buf[at:line_end]).split()
    try:
        if headed:
            # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
            subject, sid, total, header_size = args[1], int(args[2]), int(args[-1]), int(args[-2])
            reply = args[3] if len(args) == 6 else b""
        else:
            # MSG <subject> <sid> [reply] <bytes>
            subject, sid, total, header_size = args[1], int(args[2]), int(args[-1]), 0
            reply = args[3] if len(args) == 5 else b""
    except (IndexError, ValueError):
        return None
    start = line_end + 2
    if start + total + 2 > end:
        return None
    return subject, sid, reply, start, start + header_size, start + total


class _Sink:
    """Looks enough like the future of a nats-py request subscription that `_process_msg` hands it each
    message (`set_result`), which it passes to a function at once."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[Msg], None]) -> None:
        self.deliver = deliver

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        self.deliver(msg)


async def sink(nc: Client, subject: str, deliver: Callable[[Msg], None], queue: str = "") -> Any:
    """Subscribe `deliver` (a plain function that must not block) to `subject`: called in the read loop."""
    return await nc.subscribe(subject, queue=queue, future=cast(Any, _Sink(deliver)))
