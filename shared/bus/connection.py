"""One process's connection to the bus (`Bus`): connect, publish, broadcast listening (and scatter-gather),
request-reply and work-queue requests through the one reply multiplexer (`replies.py`), and opening a
stream (`stream.py`).

Every nats-py exception that can reach a caller is translated here into the gateway's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import metrics
from shared.bus import wire
from shared.bus.errors import BusUnavailable, Lost, NoResponders
from shared.bus.replies import HEARTBEAT_SECONDS, LOST_AFTER, Replies, TimedOut
from shared.bus.stream import Stream
from shared.errors import DeadlineExceeded, Unavailable
from shared.messages import Reply, reply_decoder
from shared.subjects import Headers

log = logging.getLogger("llm_edge.bus")

Listener = Callable[[bytes, Mapping[str, str]], Awaitable[None]]
_NO_HEADERS: dict[str, str] = {}
# How often the work queue delivers one request (see workqueue.py): the first time and two redeliveries.
QUEUE_DELIVERIES = 3
# How long a queue this process has used before may go without a leader (in a cluster, the node leading it
# died and the others are electing another, about two seconds) before its absence is reported.
QUEUE_LEADERLESS_SECONDS = 6.0
_QUEUE_RETRY_SECONDS = 0.1
_BUS_DURATION = metrics.Children(metrics.BUS_DURATION)


class Answer:
    """A reply as received: its bytes (to pass on without encoding them again) and headers."""

    __slots__ = ("data", "headers")

    def __init__(self, data: bytes, headers: Mapping[str, str]) -> None:
        self.data = data
        self.headers = headers


class Bus:
    def __init__(self, nc: Client) -> None:
        self.nc = nc  # the nats-py client; only code in shared/bus (and tests) touches it
        self.replies = Replies(nc)
        self.queues_seen: set[str] = set()  # admission subjects that have taken a request from us

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    @property
    def closed(self) -> bool:
        return self.nc.is_closed

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its `max_payload`): a request or an answer is one."""
        return int(self.nc.max_payload)

    @property
    def url(self) -> str:
        return self.nc.connected_url.geturl() if self.nc.connected_url else ""

    def new_subject(self) -> str:
        """A fresh inbox subject, for a subscriber of one's own (status discovery, tests)."""
        return self.nc.new_inbox()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      reply: str = "") -> None:
        try:
            await wire.publish(self.nc, subject, data, headers, reply)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.ConnectionDrainingError) as exc:
            raise BusUnavailable("the message bus is not connected") from exc

    async def listen(self, subject: str, handler: Listener, queue: str = "") -> None:
        """Every message on `subject` (one per queue group with `queue`), handled inline: for handlers that
        do not wait on anything (an L1 fill). `Server.listen` runs each in its own task instead."""

        async def deliver(msg: Msg) -> None:
            try:
                await handler(msg.data, msg.headers or _NO_HEADERS)
            except Exception:  # a broadcast has nobody to answer: log it, keep listening
                log.exception("listener for %s failed", subject)

        await self.nc.subscribe(subject, queue=queue, cb=deliver)
        await wire.flush(self.nc)

    async def ask(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                  heartbeat: float | None = None, cancel: str | None = None) -> Answer:
        """Request-reply with our errors: `NoResponders` at once, `DeadlineExceeded` at the timeout, and
        with `heartbeat`, `Lost` once the responder has been silent for `LOST_AFTER` heartbeats.

        The request carries a bus id (`Llm-Bus-Id`): its own token, unless it already has one (the router
        passes the ingress's on to the worker, so one cancel reaches the call). With `cancel`, a wait that
        is cancelled (the client went away) publishes the cancel notice on that subject, which closes the
        upstream call of the worker holding the request."""
        if timeout <= 0:
            raise DeadlineExceeded("the request deadline passed before it was sent", where=subject)
        started = time.perf_counter()
        await self.replies.start()
        waiter = self.replies.open(heartbeat)
        headers = {**headers}
        bus_id = headers.setdefault(Headers.BUS_ID, waiter.token)
        try:
            if heartbeat is not None:
                headers[Headers.HEARTBEAT] = f"{heartbeat:g}"
            await self.publish(subject, payload, headers, reply=waiter.subject)
            msg = await waiter.next(time.monotonic() + timeout, subject)
        except asyncio.CancelledError:
            if cancel is not None and self.connected:
                with contextlib.suppress(BusUnavailable):
                    await self.publish(cancel, b"", headers={Headers.BUS_ID: bus_id})
            raise
        except TimedOut:
            raise DeadlineExceeded("the request deadline was exceeded", where=subject) from None
        except NoResponders:
            raise NoResponders(f"no instance is serving {subject}", where=subject) from None
        finally:
            self.replies.close(waiter)
        _BUS_DURATION(subject).observe(time.perf_counter() - started)
        return Answer(msg.data, msg.headers or _NO_HEADERS)

    async def request(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float | None = None, cancel: str | None = None) -> tuple[Reply, Answer]:
        """`ask`, with the reply decoded (and kept as bytes beside it)."""
        answer = await self.ask(subject, payload, headers, timeout, heartbeat, cancel)
        return reply_decoder.decode(answer.data), answer

    async def enqueue(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float = HEARTBEAT_SECONDS) -> tuple[Reply, Answer]:
        """Queue a request in a JetStream work queue (see workqueue.py) and wait for its answer:
        `DeadlineExceeded` at the timeout, `NoResponders` when no queue exists (no capped worker ever
        started). The waiter is armed by the first beat of the worker that takes the request (a request
        still queued is held by nobody); when that worker goes silent, the server's redelivery to a live
        worker is the retry, and this keeps waiting on the same token, disarmed until the new worker beats.
        `Lost` only once every delivery the queue allows has gone silent."""
        if timeout <= 0:
            raise DeadlineExceeded("the request deadline passed before it was queued", where=subject)
        await self.replies.start()
        waiter = self.replies.open(heartbeat, armed=False)
        until = time.monotonic() + timeout
        try:
            try:
                await self._queue(subject, payload, {**headers, Headers.REPLY_TO: waiter.subject,
                                                     Headers.HEARTBEAT: f"{heartbeat:g}"}, until)
            except nats.errors.TimeoutError as exc:
                raise Unavailable("the admission queue did not accept the request", code="queue_unavailable",
                                  where=subject) from exc
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
                raise BusUnavailable("the message bus is not connected") from exc
            losses = 0
            while True:
                try:
                    msg = await waiter.next(until, subject)
                    break
                except TimedOut:
                    raise DeadlineExceeded("the request deadline passed while queued or in flight",
                                           where=subject) from None
                except Lost as lost:
                    losses += 1
                    if lost.started or losses >= QUEUE_DELIVERIES:
                        raise  # a stream under way is never restarted, by a redelivery either
                    log.warning("the worker holding a queued request on %s went silent; awaiting its "
                                "redelivery", subject)
                    waiter.heard = None  # disarmed until the worker it is redelivered to beats
        finally:
            self.replies.close(waiter)
        return reply_decoder.decode(msg.data), Answer(msg.data, msg.headers or _NO_HEADERS)

    async def _queue(self, subject: str, payload: bytes, headers: dict[str, str], until: float) -> None:
        """Publish to the work queue, stored once the stream acknowledges it. No answer at all means no
        stream: at once `NoResponders` for a queue never used (no capped worker ever started); for one
        used before, a cluster electing the queue's new leader, so it is tried again for a few seconds."""
        leaderless_until = min(until, time.monotonic() + QUEUE_LEADERLESS_SECONDS)
        while True:
            try:
                await self.nc.jetstream().publish(subject, payload, timeout=min(until - time.monotonic(), 5.0),
                                                  headers=headers)
                self.queues_seen.add(subject)
                return
            except (nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError) as exc:
                if subject not in self.queues_seen or time.monotonic() + _QUEUE_RETRY_SECONDS >= leaderless_until:
                    raise NoResponders(f"no admission queue for {subject}: no worker has started",
                                       where=subject) from exc
                log.info("the admission queue %s has no leader; trying again", subject)
                await asyncio.sleep(_QUEUE_RETRY_SECONDS)  # the election's pace: nothing to wait on

    async def open_stream(self, subject: str, payload: bytes, headers: dict[str, str], cancel: str,
                          heartbeat: float = HEARTBEAT_SECONDS) -> Stream:
        """Send a stream request; its frames (and the heartbeats of whoever serves it) arrive on one
        token, which is also the request's bus id (`Llm-Bus-Id`) and the key of its cancel notice."""
        await self.replies.start()
        waiter = self.replies.open(heartbeat)
        headers = {**headers, Headers.HEARTBEAT: f"{heartbeat:g}", Headers.BUS_ID: waiter.token}
        try:
            await self.publish(subject, payload, headers, reply=waiter.subject)
        except BaseException:
            self.replies.close(waiter)
            raise
        waiter.heard = time.monotonic()
        return Stream(self, waiter, cancel)

    async def drain(self) -> None:
        if self.nc.is_connected:
            await self.nc.drain()
        elif not self.nc.is_closed:
            await self.nc.close()  # the bus itself is gone: nothing left to flush

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()


def servers(url: str) -> list[str]:
    """`NATS_URL` as nats-py takes it: one URL, or several separated by commas (a cluster's nodes)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, name: str) -> Bus:
    """A connection that notices a dead server within seconds and reconnects forever. `url` may list
    several servers (comma-separated): tried in the order given, then every node the cluster announces."""

    async def on_error(exc: Exception) -> None:
        # Slow consumers drop messages silently unless reported here.
        log.warning("nats error: %r", exc)

    async def on_disconnect() -> None:
        log.info("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = Client()
    wire.install(nc)
    await nc.connect(
        servers(url),
        name=name,
        dont_randomize=True,  # the operator's order: a deployment spreads its replicas by listing nodes
        connect_timeout=2,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # typed int, used as seconds to sleep
        max_reconnect_attempts=-1,
        ping_interval=5,
        max_outstanding_pings=3,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=64 * 1024 * 1024,
    )
    bus = Bus(nc)
    await bus.replies.start()
    return bus


class Unreachable(Exception):
    """`connect_once` could not reach NATS; the message says why."""


async def connect_once(url: str, name: str, deadline: float = 2.0) -> Bus:
    """One quick attempt (and one retry), for tools that ask a question (`llm-edge status`) and must not
    wait for a server."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)  # nats-py would log these; the caller prints one message that says it all

    nc = Client()
    wire.install(nc)
    try:
        await asyncio.wait_for(
            nc.connect(servers(url), name=name, connect_timeout=1, reconnect_time_wait=0.2,  # type: ignore[arg-type]
                       max_reconnect_attempts=1, error_cb=on_error),
            deadline,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        cause = errors[-1] if errors else exc
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise Unreachable(f"cannot reach NATS at {url}: {detail}") from exc
    return Bus(nc)


async def gather(bus: Bus, subjects: list[str], window: float) -> list[bytes]:
    """Scatter-gather: publish to each subject with one reply inbox and collect every non-empty reply for
    `window` seconds (how many answer is what is being asked, so the window is the only end)."""
    replies: list[bytes] = []

    async def collect(msg: Msg) -> None:
        if msg.data:  # an empty message is the server's "no responders" status, not an answer
            replies.append(msg.data)

    inbox = bus.nc.new_inbox()
    try:
        sub = await bus.nc.subscribe(inbox, cb=collect)
        try:
            for subject in subjects:
                await bus.nc.publish(subject, b"", reply=inbox)
            await wire.flush(bus.nc)
            await asyncio.sleep(window)
        finally:
            await sub.unsubscribe()
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
        raise BusUnavailable("lost the connection to NATS") from exc
    return replies


__all__ = ["HEARTBEAT_SECONDS", "LOST_AFTER", "Answer", "Bus", "Lost", "NoResponders", "Stream", "connect"]
