"""A service instance on the bus (`Server`): typed handlers registered as micro endpoints, each request
decoded, handled in its own task, answered (a Struct encoded, `Raw` bytes as they are, a `GatewayError`
as an `ErrorReply`), with heartbeats while it runs when the requester asked for them, and drained on stop.

A handler is `async (request, Context) -> Reply | Raw | None` (None: answered elsewhere, e.g. a router
whose worker answered the ingress directly). A request with `Llm-Answer-To` has a success published there
and only its outcome to the reply subject (see `Server._publish`). A stream handler is an async iterator
of `StreamChunk`/`StreamEnd` frames, which go to the request's `Llm-Stream-To` inbox, and finally of the
assembled `ChatResult`, which goes to the reply subject. An error before the first chunk is a plain error
reply (the requester may try elsewhere); after it, the stream is ended with an error frame and the reply
says `stream_started`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.micro.service import Service

from shared import deadlines
from shared.bus import micro, wire
from shared.bus.connection import Bus, Listener
from shared.bus.context import Context, Raw
from shared.bus.errors import BusUnavailable
from shared.deadlines import Deadline
from shared.errors import GatewayError, InternalError, InvalidRequest, ProviderError
from shared.messages import ChatResult, Delivered, ErrorReply, HealthReport, Reply, StreamChunk, StreamEnd, encode
from shared.subjects import Headers, Queues

log = logging.getLogger("llm_edge.bus")

Req = TypeVar("Req")
Handler = Callable[[Req, Context], Awaitable[Reply | Raw | None]]
StreamHandler = Callable[[Req, Context], AsyncIterator[StreamChunk | StreamEnd | ChatResult]]
Decoder = Callable[[bytes], Req]
_NO_HEADERS: dict[str, str] = {}
_EARLY_CANCEL_SECONDS = 60.0
_EARLY_CANCELS_KEPT = 4096
_DELIVERED = encode(Delivered())
_FILLED = (Headers.CACHE_KEY, Headers.CACHE_TTL)  # what a fill published for the requester carries


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[Req]):
    """How one endpoint turns bytes into a request and a request into an answer."""

    decode: Decoder[Req]
    handler: Handler[Req]
    stream: StreamHandler[Req] | None = None


def raw(data: bytes) -> bytes:
    """The decoder of an endpoint whose handler takes the request's bytes as they are."""
    return data


class Heartbeat:
    """Heartbeats to the requester while a handler runs. Until the first is due, a request holds only a
    deadline on the loop's shared timer (`shared/deadlines.py`), so a request answered quickly costs no timer
    of its own, no task and no message.
    `now` starts with a beat at once (a request taken from a work queue); `also` runs with every beat (its
    in-progress ack)."""

    __slots__ = ("also", "bus", "due", "every", "task", "timers", "to")

    def __init__(self, bus: Bus, to: str, every: float,
                 also: Callable[[], Awaitable[None]] | None = None, now: bool = False) -> None:
        self.bus, self.to, self.every, self.also = bus, to, every, also
        self.task: asyncio.Task[None] | None = None
        self.timers = deadlines.current()
        self.due: Deadline | None = None
        if now:
            self.start()
        else:
            self.due = self.timers.at(time.monotonic() + every, self.start)

    @classmethod
    def asked(cls, bus: Bus, ctx: Context) -> Heartbeat | None:
        value = ctx.headers.get(Headers.HEARTBEAT)
        if value is None or not ctx.reply:
            return None
        try:
            every = max(0.05, float(value))
        except ValueError:
            return None
        return cls(bus, ctx.reply, every)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            if self.bus.connected:
                with contextlib.suppress(BusUnavailable):
                    await self.bus.publish(self.to, b"", headers={Headers.ALIVE: "1"})
                if self.also is not None:
                    with contextlib.suppress(Exception):  # a missed in-progress ack is not fatal
                        await self.also()
            await asyncio.sleep(self.every)  # the heartbeat's period, not a wait for something to happen

    def cancel(self) -> None:
        if self.due is not None:
            self.timers.cancel(self.due)  # a no-op once it has fired
        if self.task is not None:
            self.task.cancel()


class Server:
    """One service instance on the bus: micro registration, endpoints, listeners, draining."""

    def __init__(self, bus: Bus, name: str, version: str, description: str) -> None:
        self.bus = bus
        self._name = name
        self._version = version
        self._description = description
        self._micro: Service | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The requests a cancel notice may stop (streams, and plain requests where cancels are heard), by
        # bus id.
        self._running: dict[str, asyncio.Task[Any]] = {}
        # Cancels that came before their request did (a client gone before the request reached us, or a
        # redelivered queued request whose first delivery already reached the client): bus id -> when.
        self._early_cancels: dict[str, float] = {}
        self._cancels: set[str] = set()
        self._cancelled: set[str] = set()  # bus ids of the requests in `_running` a cancel notice stopped

    @property
    def nc(self) -> Any:
        """The nats-py client underneath (for tests that cut it as a crash would)."""
        return self.bus.nc

    @property
    def id(self) -> str:
        return self._micro.id if self._micro else ""

    async def start(self) -> None:
        self._micro = await micro.register(self.bus.nc, self._name, self._version, self._description)

    def spawn(self, work: Coroutine[Any, Any, None] | Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def endpoint(self, name: str, subject: str, queue: str, endpoint: Endpoint[Any], *,
                       cancels: str | None = None, limit: int = 1024) -> None:
        """Serve `endpoint` on `subject` in queue group `queue`; with `cancels`, cancel notices on that
        subject stop the request they name (by bus id), a stream or a plain request, which is then answered
        with a `client_disconnected` error."""
        assert self._micro is not None, "start() first"

        async def run(msg: Msg) -> Exception | None:
            return await self.answer(endpoint, Context(msg.data, msg.headers or _NO_HEADERS, msg.reply or ""))

        await micro.add_endpoint(self._micro, micro.TaskEndpoint(self._micro, name, subject, queue, run,
                                                                 self.spawn, limit))
        if cancels is not None and cancels not in self._cancels:
            self._cancels.add(cancels)
            await self.bus.listen(cancels, self._on_cancel)
        await wire.flush(self.bus.nc)  # the server knows the subscription before anyone is told we are ready

    async def health_endpoint(self, subject: str,
                              report: Callable[[], HealthReport | Awaitable[HealthReport]]) -> None:
        """Answer health probes on `subject` (one instance of the kind answers each probe)."""

        async def handle(request: bytes, ctx: Context) -> Raw:
            result = report()
            if not isinstance(result, HealthReport):
                result = await result
            return Raw(encode(result))

        await self.endpoint("health", subject, Queues.HEALTH, Endpoint(raw, handle), limit=16)

    async def listen(self, subject: str, handler: Listener, queue: str = "") -> None:
        """A broadcast (or, with `queue`, one member per group): each message handled in its own task."""

        async def spawn(data: bytes, headers: Mapping[str, str]) -> None:
            self.spawn(_guarded(handler, data, headers, subject))

        await self.bus.listen(subject, spawn, queue)

    async def answer(self, endpoint: Endpoint[Any], ctx: Context, beat: Heartbeat | None = None
                     ) -> Exception | None:
        """Decode, handle, reply; the error replied with, if any. The one place where a handler's failure
        becomes an error reply."""
        beat = beat or Heartbeat.asked(self.bus, ctx)
        try:
            try:
                request = endpoint.decode(ctx.data)
            except msgspec.DecodeError as exc:
                raise InvalidRequest("the request could not be decoded") from exc
            if endpoint.stream is not None and ctx.streaming:
                await self._stream(endpoint.stream, request, ctx)
                return None
            if self._cancels and (key := ctx.bus_id):
                result = await self._cancellable(key, endpoint.handler(request, ctx))
            else:
                result = await endpoint.handler(request, ctx)
            if result is not None and ctx.reply:
                await self._publish(ctx, result)
            return None
        except GatewayError as exc:
            await self._reply(ctx.reply, exc.to_reply())
            return exc
        except Exception as exc:  # the one place a handler's unexpected failure becomes a reply
            log.exception("handler failed")
            await self._reply(ctx.reply, InternalError("internal error").to_reply())
            return exc
        finally:
            if beat is not None:
                beat.cancel()

    async def _publish(self, ctx: Context, result: Reply | Raw) -> None:
        """The answer to the reply subject; or, asked to answer directly (`Llm-Answer-To`), a success to
        that inbox (and first to `Llm-Fill-To`, the cache fill, when asked) and only the outcome to the
        reply subject: the answer itself when the requester needs it too (`Llm-Outcome: result`), else
        `Delivered`. An error always goes to the reply subject alone:
        the requester (the router) decides whether it is the final answer or worth another try."""
        data, headers = (result.data, result.headers) if isinstance(result, Raw) else (encode(result), None)
        to = ctx.headers.get(Headers.ANSWER_TO)
        if not to or isinstance(result, ErrorReply):
            await self.bus.publish(ctx.reply, data, headers)
            return
        if fill := ctx.headers.get(Headers.FILL_TO):
            await self.bus.publish(fill, data, {name: ctx.headers[name] for name in _FILLED if name in ctx.headers})
        await self.bus.publish(to, data, headers)
        wanted = ctx.headers.get(Headers.OUTCOME) == "result"
        await self.bus.publish(ctx.reply, data if wanted else _DELIVERED, headers if wanted else None)

    async def _cancellable(self, key: str, work: Awaitable[Reply | Raw | None]) -> Reply | Raw | None:
        """A plain request's handler, stopped by a cancel notice for its bus id: the requester (the client)
        went away, so its upstream call is closed rather than left to run for nobody. The handler runs in
        the request's own task, which the notice cancels (a task of its own cost ~15 µs a request)."""
        if self._early_cancels.pop(key, None) is not None:
            if isinstance(work, Coroutine):
                work.close()
            raise ProviderError("the client disconnected", code="client_disconnected")
        current = asyncio.current_task()
        assert current is not None
        self._running[key] = current
        try:
            return await work
        except asyncio.CancelledError:
            if key in self._cancelled and current.uncancel() == 0:  # the notice alone, not a stop too
                raise ProviderError("the client disconnected", code="client_disconnected") from None
            raise  # this instance itself is being stopped
        finally:
            self._cancelled.discard(key)
            if self._running.get(key) is current:
                del self._running[key]

    async def _reply(self, to: str, reply: Reply) -> None:
        if to and self.bus.connected:
            with contextlib.suppress(BusUnavailable):
                await self.bus.publish(to, encode(reply))

    async def _stream(self, handler: StreamHandler[Any], request: Any, ctx: Context) -> None:
        to = ctx.headers.get(Headers.STREAM_TO)
        if not to:
            raise InvalidRequest("a stream request needs a destination inbox")
        key = ctx.bus_id
        if key and self._early_cancels.pop(key, None) is not None:
            error = ProviderError("the client disconnected", code="client_disconnected")
            await self._reply(ctx.reply, msgspec.structs.replace(error.to_reply(), stream_started=True))
            return
        state = _Streamed()
        pump = asyncio.create_task(self._pump(handler, request, ctx, to, state))
        if key:
            self._running[key] = pump
        try:
            await pump
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                pump.cancel()
                raise  # this instance itself is being stopped
            error = ProviderError("the client disconnected", code="client_disconnected")
            await self._reply(ctx.reply, msgspec.structs.replace(error.to_reply(), stream_started=True))
        except GatewayError as exc:
            if not state.started:
                raise  # nothing reached the client: the requester may try another target
            reply = msgspec.structs.replace(exc.to_reply(), stream_started=True)
            await self._reply(to, reply)
            await self._reply(ctx.reply, reply)
        finally:
            self._cancelled.discard(key)
            if key and self._running.get(key) is pump:
                del self._running[key]

    async def _pump(self, handler: StreamHandler[Any], request: Any, ctx: Context, to: str,
                    state: _Streamed) -> None:
        async for item in handler(request, ctx):
            if isinstance(item, ChatResult):
                await self.bus.publish(ctx.reply, encode(item))
                continue
            await self.bus.publish(to, encode(item))
            if not state.started:
                state.started = True
                # Told at once, not at the next heartbeat: from now on this stream is never retried.
                await self.bus.publish(ctx.reply, b"", headers={Headers.ALIVE: "started"})

    async def _on_cancel(self, data: bytes, headers: Mapping[str, str]) -> None:
        key = headers.get(Headers.BUS_ID)
        if not key:
            return
        if (task := self._running.get(key)) is not None:
            log.info("client disconnected; closing the upstream call")
            self._cancelled.add(key)
            task.cancel()
            return
        now = time.monotonic()
        if len(self._early_cancels) >= _EARLY_CANCELS_KEPT:  # every instance hears every cancel: stay bounded
            self._early_cancels = {k: t for k, t in self._early_cancels.items() if now - t < _EARLY_CANCEL_SECONDS}
            while len(self._early_cancels) >= _EARLY_CANCELS_KEPT:
                del self._early_cancels[next(iter(self._early_cancels))]
        self._early_cancels[key] = now

    async def drain(self, grace: float = 30.0) -> None:
        """Stop taking work, finish what is in flight (up to `grace` seconds), then close."""
        if self._micro is not None and self.bus.connected:
            await micro.stop_taking(self._micro)
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while self._tasks and loop.time() < until:  # requests waiting for a slot start as others end
            await asyncio.wait(set(self._tasks), timeout=until - loop.time())
        if self._tasks:
            log.warning("drain: %d requests still running after %.0fs grace", len(self._tasks), grace)
        if self._micro is not None and self.bus.connected:
            await micro.stop(self._micro)
        await self.bus.drain()


class _Streamed:
    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


async def _guarded(handler: Listener, data: bytes, headers: Mapping[str, str], subject: str) -> None:
    try:
        await handler(data, headers)
    except Exception:
        log.exception("subscription handler for %s failed", subject)
