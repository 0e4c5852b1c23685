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
- `sink` makes a subscription deliver each message by calling a plain function in the read loop, with no
  queue and no task (nats-py's `future=` subscription, which it resolves with `set_result(msg)`, given an
  object that calls the function instead). The function must not block: the bus's own multiplexer and
  endpoint admission are such functions.

All of it relies on nats-py's private attributes; it is confined to this module, installed by `connect`
on the client before it connects, and `tests/integration/test_bus_wire.py` fails if a nats-py release
changes what it relies on (nats-py is pinned to a tested range in pyproject.toml).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.protocol.parser import AWAITING_CONTROL_LINE
from nats.protocol.parser import Parser as NatsParser

_HEADER_LINE = b"NATS/1.0\r\n"
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token, as nats-py checks names
_names_seen: set[str] = set()  # the gateway's own header names, checked once each
_SPACE = re.compile(r"\s")  # in a subject: nats-py refuses it (a CR or LF would be a protocol injection)


def install(nc: Client) -> None:
    """Put the lean parser and header reader in place on a client that has not connected yet."""
    parser = Parser(nc)
    nc._ps = parser
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
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


async def flush(nc: Client) -> None:
    """`nc.flush()` as it promises: when it returns, the server has what was sent before it. nats-py writes
    the flush's PING straight to the socket, ahead of the commands still queued for its flusher task (a SUB
    sent a moment earlier), so the PONG can come back before the server has seen them: a subscription
    "flushed" could miss the first messages published to it (about one time in twenty on a new connection,
    `tests/integration/test_bus_wire.py`). Here the queue is written first."""
    await nc._flush_pending(force_flush=True)
    await nc.flush()


class Parser(NatsParser):
    """nats-py's parser with a fast path for whole MSG and HMSG frames (see the module's docstring)."""

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self.state != AWAITING_CONTROL_LINE:
            await super().parse()
            return
        nc = self.nc
        at, end = 0, len(buf)
        while at < end:
            if buf.startswith(b"MSG ", at):
                headed = False
            elif buf.startswith(b"HMSG ", at):
                headed = True
            else:
                break  # another operation: nats-py's parser
            line_end = buf.find(b"\r\n", at)
            if line_end < 0:
                break
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
                break  # malformed: nats-py's parser raises its protocol error
            start = line_end + 2
            if start + total + 2 > end:
                break  # the frame continues in the next read
            header = bytes(buf[start:start + header_size]) if header_size else None
            payload = bytes(buf[start + header_size:start + total])
            at = start + total + 2
            await nc._process_msg(sid, subject, reply, payload, header)
        if at:
            del buf[:at]
        if buf:
            await super().parse()


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
