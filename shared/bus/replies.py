"""The one reply multiplexer: a wildcard inbox per connection, one unguessable token per request, and
what arrives on a token (the reply, a stream's frames, heartbeats) sorted out here.

A responder that dies (SIGKILL, OOM, a lost node) never answers, and NATS does not tell the requester.
So a request may ask for heartbeats (`Llm-Heartbeat: N`); the responder then sends an empty `Llm-Alive`
message every N seconds while it works, and the waiter gives up with `Lost` after `LOST_AFTER` beats
of silence. A heartbeat only moves a timestamp. A waiter that is not yet *armed* (a request waiting in a
work queue, where nobody holds it yet) counts no silence until it first hears from a responder.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import deadlines
from shared.bus import wire
from shared.bus.errors import Lost, NoResponders
from shared.subjects import Headers

HEARTBEAT_SECONDS = 1.0  # how often a handler that was asked to says it is still working
LOST_AFTER = 5  # heartbeats missed before the requester gives up on it


class TimedOut(Exception):
    """The waiter's own deadline passed; callers turn it into their `DeadlineExceeded`."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    """What one request hears back, in order; `next` returns the next message that is not a heartbeat."""

    __slots__ = ("_frames", "_wake", "beat", "heard", "started", "subject", "token")

    def __init__(self, token: str, subject: str, beat: float | None, armed: bool) -> None:
        self.token = token  # unguessable: also the request's bus id
        self.subject = subject
        self.beat = beat
        self.heard: float | None = time.monotonic() if armed else None
        self.started = False  # a stream's responder said its first chunk reached the client
        self._frames: deque[Msg | Exception] = deque()
        self._wake: asyncio.Future[None] | None = None

    def _push(self, item: Msg | Exception) -> None:
        self._frames.append(item)
        if self._wake is not None:
            _wake(self._wake)

    def lost_at(self) -> float | None:
        if self.beat is None or self.heard is None:
            return None
        return self.heard + self.beat * LOST_AFTER

    async def next(self, until: float, where: str = "") -> Msg:
        """The next message by `until` (monotonic): `TimedOut` after it, `Lost` after the silence,
        `NoResponders` when nobody was subscribed."""
        loop = asyncio.get_running_loop()
        while not self._frames:
            now = time.monotonic()
            lost_at = self.lost_at()
            if now >= until:
                raise TimedOut
            if lost_at is not None and now >= lost_at:
                raise Lost(f"the instance serving {where or 'the request'} went silent", where=where,
                           started=self.started)
            self._wake = loop.create_future()
            timers = deadlines.current()
            due = timers.at(min(until, lost_at or until), _wake, self._wake)
            try:
                await self._wake
            finally:
                timers.cancel(due)
                self._wake = None
        item = self._frames.popleft()
        if isinstance(item, Exception):
            raise item
        return item


class Replies:
    """The wildcard inbox of one connection and the waiters on it."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.waiting: dict[str, Waiter] = {}
        self._subscribed = False

    async def start(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            await wire.sink(self.nc, f"{self.prefix}.*", self._deliver)

    def open(self, beat: float | None = None, armed: bool = True) -> Waiter:
        token = secrets.token_urlsafe(16)
        waiter = Waiter(token, f"{self.prefix}.{token}", beat, armed)
        self.waiting[token] = waiter
        return waiter

    def close(self, waiter: Waiter) -> None:
        self.waiting.pop(waiter.token, None)

    def _deliver(self, msg: Msg) -> None:
        waiter = self.waiting.get(msg.subject[len(self.prefix) + 1:])
        if waiter is None:  # a late heartbeat or reply for a request given up on
            return
        headers = msg.headers
        waiter.heard = time.monotonic()
        if headers:
            alive = headers.get(Headers.ALIVE)
            if alive is not None:
                if alive == "started":
                    waiter.started = True
                return
            if not msg.data and headers.get("Status") == "503":
                waiter._push(NoResponders("no instance is serving the request"))
                return
        waiter._push(msg)
