"""The router: orders a model's targets by its strategy, calls provider workers, retries and falls
back within the deadline, keeps a circuit breaker per target (shared with the other replicas over the
bus), coalesces identical requests in flight, and fills the cache.

It passes the provider's reply bytes on to the ingress untouched.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from services.router import strategy
from services.router.breaker import Breaker
from services.router.retry import wait_before_retry as retry_delay
from shared import bus, metrics, runtime, tracing
from shared.bus.workqueue import ReplyInbox
from shared.config import Config, Target
from shared.errors import (
    ContextWindowExceeded,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    Unavailable,
    from_reply,
)
from shared.logs import request_id
from shared.messages import BreakerEvent, ChatResult, ErrorReply, HealthReport, Reply, breaker_decoder, encode
from shared.routes import Routes
from shared.subjects import SERVICE_ROUTER, Headers, Queues, Subjects

log = logging.getLogger("llm_edge.router")

# Failures that are the caller's own: another target would refuse the same request.
_NO_FALLBACK_STATUS = frozenset({400, 413, 422})
# Request headers a provider worker needs; nothing else is copied onward.
_PASSED_ON = (Headers.REQUEST_ID, Headers.DEADLINE, Headers.TRACEPARENT, Headers.STREAM)


class _ModelOnly(msgspec.Struct):
    model: str


_model_decoder = msgspec.msgpack.Decoder(_ModelOnly)


class Router:
    def __init__(self, config: Config, server: bus.Server) -> None:
        self.config = config
        self.server = server
        self.routes = Routes(config)
        self.subjects = Subjects(config.prefix)
        self.default_timeout = config.ingress.request_timeout_seconds
        self.breakers: dict[str, Breaker] = {}
        self.stats: dict[str, strategy.TargetStats] = {}
        self.inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self.rng = random.Random()
        self.inbox: ReplyInbox | None = None

    async def start(self) -> None:
        await self.server.endpoint("route", self.subjects.route, Queues.ROUTER, self.handle)
        await self.server.subscribe(self.subjects.breaker, self.on_breaker_event)
        await self.server.health_endpoint(self.subjects.health("router"), self.health)

    async def handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        request_id.set(headers.get(Headers.REQUEST_ID))
        with tracing.span("route", headers, SpanKind.SERVER) as span:
            try:
                await self._route(msg, headers)
            except GatewayError as exc:
                tracing.failed(span, exc.http_status, exc.message)
                raise

    async def _route(self, msg: Msg, headers: dict[str, str]) -> None:
        try:
            model = _model_decoder.decode(msg.data).model
        except msgspec.DecodeError as exc:
            raise InvalidRequest("the request could not be decoded") from exc
        targets = self.routes.resolve(model)
        streaming = headers.get(Headers.STREAM) == "1"
        key = headers.get(Headers.CACHE_KEY)
        if streaming or not key or "no-cache" in headers.get(Headers.CACHE_CONTROL, ""):
            data = await self._call(msg, headers, model, targets, streaming)
        else:
            data = await self._single_flight(key, self._call(msg, headers, model, targets, streaming))
        if data is None:
            return  # a stream: the worker sent every frame to the ingress itself
        await self.server.nc.publish(msg.reply, data)

    async def _single_flight(self, key: str, call: Coroutine[Any, Any, bytes | None]) -> bytes | None:
        """Identical requests in flight together share one upstream call (per router replica)."""
        if (leader := self.inflight.get(key)) is not None:
            call.close()
            return await asyncio.shield(leader)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            data = await call
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a leader without followers logs nothing
            raise
        else:
            future.set_result(data)
            return data
        finally:
            del self.inflight[key]

    async def _call(
        self, msg: Msg, headers: dict[str, str], model: str, targets: list[Target], streaming: bool
    ) -> bytes | None:
        """Try targets in the strategy's order, retrying each while that helps, within the deadline."""
        deadline = bus.deadline_from(headers)
        onward = {name: headers[name] for name in _PASSED_ON if name in headers}
        tracing.inject(onward)
        if streaming:
            # Chunks go from the worker straight to the ingress; the router hears only the outcome.
            onward[Headers.STREAM_TO] = msg.reply
        now = time.monotonic()
        ordered = strategy.order(self.routes.strategy(model), targets, self.stats, self.rng,
                                 self.config.router.hybrid_latency_weight)
        candidates = [t for t in ordered if self.breaker(t).available(now)]
        if not candidates:
            raise Unavailable(f"Every target for `{model}` is failing; its circuit breakers are open.",
                              code="all_targets_unavailable")
        error: GatewayError = Unavailable(f"no target could serve `{model}`")
        window: int | None = None  # set after a context-window error: only larger targets may follow
        for target in candidates:
            if window is not None and (target.context_window or 0) <= window:
                continue
            outcome = await self._try_target(target, msg.data, headers, onward, deadline, streaming)
            if isinstance(outcome, GatewayError):
                error = outcome
                if isinstance(outcome, ContextWindowExceeded):
                    window = target.context_window or 0
                    if not any((t.context_window or 0) > window for t in candidates):
                        raise outcome
                elif outcome.http_status in _NO_FALLBACK_STATUS:
                    raise outcome
                continue
            return outcome
        raise error

    async def _try_target(
        self, target: Target, payload: bytes, headers: dict[str, str], onward: dict[str, str],
        deadline: float | None, streaming: bool,
    ) -> bytes | None | GatewayError:
        """The answer's bytes (None for a stream that reached the client), or the error to move on with."""
        onward[Headers.TARGET_MODEL] = target.model
        subject = self.subjects.provider_chat(target.provider)
        breaker = self.breaker(target)
        retry = self.config.router.retry
        attempt = 0
        while True:
            attempt += 1
            if not breaker.allow(time.monotonic()):
                return Unavailable(f"`{target.key}` is failing; its circuit breaker is open.",
                                   code="target_unavailable", where=f"provider:{target.provider}")
            started = time.monotonic()
            try:
                reply, raw = await self._ask(target, subject, payload, onward, deadline)
            except bus.Lost as lost:  # the worker died mid-call: retried like a failed call, on a live one
                log.warning("a %s worker went silent mid-call", target.provider)
                reply = lost.to_reply()
            except bus.NoResponders:
                await self._outcome(target, ok=False)
                return Unavailable(f"no worker is running for provider `{target.provider}`",
                                   code="no_provider_worker", where=f"provider:{target.provider}")
            except DeadlineExceeded:
                await self._outcome(target, ok=False)
                raise
            match reply:
                case ChatResult():
                    await self._outcome(target, ok=True)
                    seconds = reply.first_chunk_seconds if streaming else time.monotonic() - started
                    self.stats.setdefault(target.key, strategy.TargetStats()).observe(seconds or 0.0)
                    # The fill goes first (a buffered publish, it does not delay the reply) so that a
                    # client repeating the request at once already finds it in every L1.
                    await self._fill(headers, raw.data)
                    return None if streaming else raw.data
                case ErrorReply(stream_started=True):
                    await self._outcome(target, ok=reply.code == "client_disconnected")
                    return None  # the worker already ended the client's stream with this error
                case ErrorReply():
                    error = from_reply(reply)
                    if reply.status in _NO_FALLBACK_STATUS:
                        return error  # the caller's own fault: not the target's, not worth a retry
                    await self._outcome(target, ok=False)
                    time_left = bus.remaining(deadline, self.default_timeout)
                    delay = (retry_delay(attempt, reply.retry_after, time_left, retry, self.rng)
                             if reply.retryable and attempt < retry.attempts else None)
                    if delay is None:
                        log.info("target %s failed (%d), moving on", target.key, reply.status)
                        return error
                    metrics.RETRIES.labels(target.key).inc()
                    log.info("target %s failed (%d), retrying in %.2fs", target.key, reply.status, delay)
                    await asyncio.sleep(delay)
                case _:
                    return GatewayError(f"unexpected reply from {subject}")

    async def _ask(
        self, target: Target, subject: str, payload: bytes, onward: dict[str, str], deadline: float | None
    ) -> tuple[Reply, Msg]:
        """Straight to the provider's workers, or through its admission queue when it has a cap."""
        timeout = bus.remaining(deadline, self.default_timeout)
        if self.config.providers[target.provider].max_in_flight:
            if self.inbox is None:
                self.inbox = ReplyInbox(self.server.nc)
                await self.inbox.start()
            return await self.inbox.request(
                self.server.nc.jetstream(), self.subjects.admission(target.provider), payload, onward, timeout)
        return await bus.request(self.server.nc, subject, payload, onward, timeout, bus.HEARTBEAT_SECONDS)

    def breaker(self, target: Target) -> Breaker:
        found = self.breakers.get(target.key)
        if found is None:
            found = self.breakers[target.key] = Breaker(self.config.router.breaker)
        return found

    async def _outcome(self, target: Target, ok: bool) -> None:
        metrics.PROVIDER_UP.labels(target.provider).set(1 if ok else 0)
        changed = self.breaker(target).record(ok, time.monotonic())
        if changed is not None:
            await self._breaker_changed(target.key, changed)

    async def _breaker_changed(self, key: str, state: str) -> None:
        log.warning("circuit breaker for %s is now %s", key, state)
        metrics.BREAKER_OPEN.labels(key).set(1 if state == "open" else 0)
        event = BreakerEvent(target=key, state=state, origin=self.server.id)  # type: ignore[arg-type]
        await self.server.nc.publish(self.subjects.breaker, encode(event))

    async def on_breaker_event(self, msg: Msg) -> None:
        event = breaker_decoder.decode(msg.data)
        if event.origin == self.server.id:
            return
        breaker = self.breakers.get(event.target)
        if breaker is None:
            breaker = self.breakers[event.target] = Breaker(self.config.router.breaker)
        breaker.apply(event.state, time.monotonic())
        metrics.BREAKER_OPEN.labels(event.target).set(1 if event.state == "open" else 0)

    def health(self) -> HealthReport:
        now = time.monotonic()
        checks: dict[str, str] = {
            f"breaker {key}": b.state for key, b in self.breakers.items() if b.state != "closed"}
        degraded = any(not b.available(now) for b in self.breakers.values())
        return HealthReport(service="router", instance=self.server.id, status="degraded" if degraded else "up",
                            checks=checks)

    async def _fill(self, headers: dict[str, str], data: bytes) -> None:
        key = headers.get(Headers.CACHE_KEY)
        if not key or "no-store" in headers.get(Headers.CACHE_CONTROL, ""):
            return
        fill = {Headers.CACHE_KEY: key}
        if ttl := headers.get(Headers.CACHE_TTL):
            fill[Headers.CACHE_TTL] = ttl
        await self.server.nc.publish(self.subjects.cache_fill, data, headers=fill)


async def serve(config: Config, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port)
    nc = await bus.connect(config.nats_url, SERVICE_ROUTER)
    server = bus.Server(nc, SERVICE_ROUTER, "0.1.0", "LLM Edge router: targets, fallback, cache fill")
    await server.start()
    await Router(config, server).start()
    log.info("router ready")
    runtime.notify_ready(runtime.taking_work(nc, stop))
    await stop.wait()
    await server.drain()
