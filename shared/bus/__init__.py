"""The NATS glue, written once: connect, serve handlers concurrently, request with a deadline, drain.

Services register with `nats.micro` so `nats micro ls/info/stats` and `$SRV.PING` see every instance.
micro runs one handler at a time per subscription, so endpoints here start a task per request (bounded)
and keep micro's stats honest by timing the whole task. Handlers get the raw message (to answer with
bytes they did not decode) and raise `GatewayError` to answer with an error.

A responder that dies (SIGKILL, OOM, a lost node) never answers, and NATS does not tell the requester:
plain request-reply would wait for the whole deadline, ten minutes for an LLM call. So the long hops
(ingress → router → provider worker) ask for heartbeats: a request carrying `Llm-Heartbeat: N` gets an
empty `Llm-Alive` message every N seconds for as long as its handler runs (none at all for a request
answered within N seconds), and `request(..., heartbeat=N)` gives up with `Lost` after `LOST_AFTER` beats
of silence, so the caller can retry elsewhere within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro import add_service
from nats.micro.service import Endpoint, EndpointConfig, Service

from shared import metrics
from shared.errors import DeadlineExceeded, GatewayError, InternalError, Unavailable
from shared.messages import HealthReport, Reply, encode, reply_decoder
from shared.subjects import Headers, Queues

log = logging.getLogger("llm_edge.bus")

Handler = Callable[[Msg], Awaitable[None]]


class NoResponders(Unavailable):
    """Nobody subscribes to the subject: the service is not running. Known in under a millisecond."""

    default_code = "no_responders"


class Lost(Unavailable):
    """The instance working on the request went silent (its heartbeats stopped): it died or hangs."""

    default_code = "responder_lost"


HEARTBEAT_SECONDS = 1.0  # how often a handler that asked for it says it is still working
LOST_AFTER = 5  # heartbeats missed before the requester gives up on it


async def connect(url: str, name: str) -> Client:
    """A connection that notices a dead server within seconds and reconnects forever."""

    async def on_error(exc: Exception) -> None:
        # Slow consumers drop messages silently unless reported here.
        log.warning("nats error: %r", exc)

    async def on_disconnect() -> None:
        log.info("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        ping_interval=5,
        max_outstanding_pings=3,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=64 * 1024 * 1024,
    )


async def reply_error(nc: Client, reply_to: str, error: GatewayError) -> None:
    if reply_to:
        await nc.publish(reply_to, encode(error.to_reply()))


class _TaskEndpoint(Endpoint):
    """A micro endpoint whose handler runs as its own task, at most `limit` at a time.

    The semaphore is acquired in the subscription's delivery loop, so a saturated worker stops pulling
    messages and NATS's queue group hands new ones to its idle peers instead.
    """

    def __init__(self, service: Service, config: EndpointConfig, runner: Server, limit: int) -> None:
        super().__init__(service, config)
        self._runner = runner
        self._slots = asyncio.Semaphore(limit)

    async def _handle_request(self, msg: Msg) -> None:
        await self._slots.acquire()
        self._runner.track(asyncio.create_task(self._run(msg)))

    async def _run(self, msg: Msg) -> None:
        start = time.perf_counter_ns()
        self._num_requests += 1
        beating = _heartbeats(self._service._client, msg)
        try:
            await self._handler(msg)  # type: ignore[arg-type]
        except GatewayError as exc:
            self._count_error(exc)
            await reply_error(self._service._client, msg.reply, exc)
        except Exception as exc:  # the one place a handler's unexpected failure becomes a reply
            log.exception("handler for %s failed", msg.subject)
            self._count_error(exc)
            await reply_error(self._service._client, msg.reply, InternalError("internal error"))
        finally:
            if beating is not None:
                beating.cancel()
            self._slots.release()
            self._processing_time += time.perf_counter_ns() - start
            self._average_processing_time = int(self._processing_time / self._num_requests)

    def _count_error(self, exc: Exception) -> None:
        self._num_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"  # type: ignore[assignment]  # micro types it None


def _heartbeats(nc: Client, msg: Msg) -> _Heartbeat | None:
    """Heartbeats to the requester while the handler runs, when it asked for them: a timer (nothing to
    send) until the first is due, so a request answered quickly costs one timer and no message."""
    if not msg.reply or not msg.headers or Headers.HEARTBEAT not in msg.headers:
        return None
    try:
        every = max(0.05, float(msg.headers[Headers.HEARTBEAT]))
    except ValueError:
        return None
    beat = _Heartbeat(nc, msg.reply, every)
    beat.timer = asyncio.get_running_loop().call_later(every, beat.start)
    return beat


class _Heartbeat:
    def __init__(self, nc: Client, to: str, every: float) -> None:
        self.nc, self.to, self.every = nc, to, every
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            if self.nc.is_connected:
                await self.nc.publish(self.to, b"", headers={Headers.ALIVE: "1"})
            await asyncio.sleep(self.every)  # the heartbeat's period, not a wait for something to happen

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()


class Server:
    """One service instance on the bus: micro registration, endpoints, plain subscriptions, draining."""

    def __init__(self, nc: Client, name: str, version: str, description: str) -> None:
        self.nc = nc
        self._name = name
        self._version = version
        self._description = description
        self._micro: Service | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def id(self) -> str:
        return self._micro.id if self._micro else ""

    async def start(self) -> None:
        self._micro = await add_service(
            self.nc, name=self._name, version=self._version, description=self._description
        )

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def endpoint(self, name: str, subject: str, queue: str, handler: Handler, limit: int = 1024) -> None:
        assert self._micro is not None, "start() first"
        config = EndpointConfig(name=name, subject=subject, queue_group=queue, handler=handler)  # type: ignore[arg-type]
        endpoint = _TaskEndpoint(self._micro, config, self, limit)
        # micro has no public hook for a custom endpoint; registering it here keeps INFO/STATS complete.
        self._micro._endpoints.append(endpoint)
        await endpoint._start()
        await self.nc.flush()  # the server knows the subscription before anyone is told we are ready

    async def health_endpoint(
        self, subject: str, report: Callable[[], HealthReport | Awaitable[HealthReport]]
    ) -> None:
        """Answer health probes on `subject` (one instance of the kind answers each probe)."""

        async def handle(msg: Msg) -> None:
            result = report()
            if not isinstance(result, HealthReport):
                result = await result
            await self.nc.publish(msg.reply, encode(result))

        await self.endpoint("health", subject, Queues.HEALTH, handle, limit=16)

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> None:
        """A plain subscription (broadcasts, fire-and-forget); each message handled in its own task."""

        async def spawn(msg: Msg) -> None:
            self.track(asyncio.create_task(_guarded(handler, msg)))

        self._subs.append(await self.nc.subscribe(subject, queue=queue, cb=spawn))
        await self.nc.flush()

    async def drain(self, grace: float = 30.0) -> None:
        """Stop taking work, finish what is in flight (up to `grace` seconds), then close."""
        if self._micro is not None:
            for endpoint in list(self._micro._endpoints):
                if endpoint._subscription is not None:
                    await endpoint._subscription.drain()
                    endpoint._subscription = None
        for sub in self._subs:
            await sub.drain()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            if pending:
                log.warning("drain: %d requests still running after %.0fs grace", len(pending), grace)
        if self._micro is not None:
            self._micro._endpoints = []
            await self._micro.stop()
        if self.nc.is_connected:
            await self.nc.drain()
        elif not self.nc.is_closed:
            await self.nc.close()  # the bus itself is gone: nothing left to flush


async def _guarded(handler: Handler, msg: Msg) -> None:
    try:
        await handler(msg)
    except Exception:
        log.exception("subscription handler for %s failed", msg.subject)


async def request(
    nc: Client, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
    heartbeat: float | None = None,
) -> tuple[Reply, Msg]:
    """Request-reply with our errors: `NoResponders` at once, `DeadlineExceeded` at the timeout, and
    with `heartbeat`, `Lost` once the responder has been silent for `LOST_AFTER` heartbeats.

    Returns the decoded reply and the raw message (to pass its bytes on without encoding them again).
    """
    if timeout <= 0:
        raise DeadlineExceeded("the request deadline passed before it was sent", where=subject)
    started = time.perf_counter()
    try:
        if heartbeat is None:
            msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
        else:
            msg = await _replies(nc).request(subject, payload, headers, timeout, heartbeat)
    except nats.errors.NoRespondersError as exc:
        raise NoResponders(f"no instance is serving {subject}", where=subject) from exc
    except nats.errors.TimeoutError as exc:
        raise DeadlineExceeded("the request deadline was exceeded", where=subject) from exc
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
        raise Unavailable("the message bus is not connected", code="bus_unavailable") from exc
    metrics.BUS_DURATION.labels(subject).observe(time.perf_counter() - started)
    return reply_decoder.decode(msg.data), msg


class _Pending:
    __slots__ = ("answer", "heard")

    def __init__(self, answer: asyncio.Future[Msg], heard: float) -> None:
        self.answer = answer
        self.heard = heard


class _Replies:
    """One wildcard inbox per connection for requests that take heartbeats (nats-py's own request
    resolves on the first message, which would be a heartbeat). A heartbeat only moves a timestamp."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.sub: Subscription | None = None
        self.waiting: dict[str, _Pending] = {}
        self.tokens = 0

    async def _deliver(self, msg: Msg) -> None:
        pending = self.waiting.get(msg.subject[len(self.prefix) + 1:])
        if pending is None:  # a late heartbeat or reply for a request given up on
            return
        if msg.headers and Headers.ALIVE in msg.headers:
            pending.heard = time.monotonic()
        elif not pending.answer.done():
            pending.answer.set_result(msg)

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float, heartbeat: float
    ) -> Msg:
        if self.sub is None:
            self.sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._deliver)
        self.tokens += 1
        token = str(self.tokens)
        now = time.monotonic()
        pending = _Pending(asyncio.get_running_loop().create_future(), now)
        self.waiting[token] = pending
        try:
            await self.nc.publish(subject, payload, reply=f"{self.prefix}.{token}",
                                  headers={**headers, Headers.HEARTBEAT: f"{heartbeat:g}"})
            ends = now + timeout
            while True:
                silence_ends = pending.heard + heartbeat * LOST_AFTER
                done, _ = await asyncio.wait((pending.answer,), timeout=min(ends, silence_ends) - now)
                if done:
                    msg = pending.answer.result()
                    if not msg.data and msg.headers and msg.headers.get("Status") == "503":
                        raise nats.errors.NoRespondersError
                    return msg
                now = time.monotonic()
                if now >= ends:
                    raise nats.errors.TimeoutError
                if now >= pending.heard + heartbeat * LOST_AFTER:
                    raise Lost(f"the instance serving {subject} went silent", where=subject)
        finally:
            del self.waiting[token]


_replies_by_connection: weakref.WeakKeyDictionary[Client, _Replies] = weakref.WeakKeyDictionary()


def _replies(nc: Client) -> _Replies:
    found = _replies_by_connection.get(nc)
    if found is None:
        found = _replies_by_connection[nc] = _Replies(nc)
    return found


def deadline_from(headers: dict[str, str] | None) -> float | None:
    """The absolute deadline (epoch seconds) carried by a request, if any."""
    if headers and (value := headers.get(Headers.DEADLINE)):
        try:
            return int(value) / 1000.0
        except ValueError:
            return None
    return None


def remaining(deadline: float | None, default: float) -> float:
    return default if deadline is None else deadline - time.time()
