"""The router: orders a model's targets by its strategy, calls provider workers, retries and falls
back within the deadline, keeps a circuit breaker per target (shared with the other replicas over the
bus), coalesces identical requests in flight, and fills the cache.

A worker answers the ingress directly (`Llm-Answer-To`, as a stream's frames go to `Llm-Stream-To`) and
tells the router the outcome: the answer itself when the router needs it (cache fill, single flight),
else `Delivered`; an error goes to the router alone, which retries, falls back or answers with it.

Only the target's own failures feed its breaker: a worker that died (`Lost`) is retried on a live one,
the client's own deadline is the client's, and a provider's 429 (slow down) is retried after its
Retry-After, never counted; a stream whose worker died after its first chunk is ended with one error,
never restarted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, NamedTuple, Protocol

import msgspec
from opentelemetry.trace import SpanKind

from services.router import strategy
from services.router.breaker import Breaker
from services.router.embeddings import EmbeddingRoutes
from services.router.retry import wait_before_retry as retry_delay
from shared import bus, metrics, runtime, tracing
from shared.config import Config, Target
from shared.errors import (
    ContextWindowExceeded,
    DeadlineExceeded,
    GatewayError,
    ProviderError,
    Unavailable,
    from_reply,
)
from shared.logs import request_id
from shared.messages import (
    BreakerEvent,
    ChatResult,
    Delivered,
    ErrorReply,
    HealthReport,
    Reply,
    TokenCount,
    breaker_decoder,
    encode,
)
from shared.pricing import prices_header
from shared.routes import Routes
from shared.subjects import SERVICE_ROUTER, Headers, Queues, Subjects

log = logging.getLogger("llm_edge.router")

# Failures that are the caller's own: another target would refuse the same request.
_NO_FALLBACK_STATUS = frozenset({400, 413, 422})
# Request headers a provider worker needs; nothing else is copied onward.
_PASSED_ON = (Headers.REQUEST_ID, Headers.BUS_ID, Headers.DEADLINE, Headers.TRACEPARENT, Headers.STREAM)
# Times a call whose worker went silent is sent again (each time to a live worker) before moving on.
LOST_RETRIES = 2
# A timeout this close to the request's deadline is the client's deadline, not the target's slowness.
_DEADLINE_SLACK_SECONDS = 0.1
_PROVIDER_UP = metrics.Children(metrics.PROVIDER_UP)


class _ModelOnly(msgspec.Struct):
    model: str


def _address(onward: dict[str, str], target: Target) -> None:
    """The headers that name the target to the worker: its model, and its prices when configured."""
    onward[Headers.TARGET_MODEL] = target.model
    if (prices := prices_header(target.input_price, target.output_price)) is not None:
        onward[Headers.TARGET_PRICES] = prices
    else:
        onward.pop(Headers.TARGET_PRICES, None)  # `onward` is reused for the next target


class Answered(NamedTuple):
    """A call that ended well: the answer's bytes when the router holds them (for single-flight followers
    and the cache fill), and whether the client already has it (a stream, or a worker's direct answer)."""

    data: bytes | None
    delivered: bool


def _fill_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The headers of the cache fill of an answer to a request with these headers; None: no fill."""
    key = headers.get(Headers.CACHE_KEY)
    if not key or "no-store" in headers.get(Headers.CACHE_CONTROL, ""):
        return None
    fill = {Headers.CACHE_KEY: key}
    if ttl := headers.get(Headers.CACHE_TTL):
        fill[Headers.CACHE_TTL] = ttl
    return fill


def _answer_directly(onward: dict[str, str], ctx: bus.Context, fill_subject: str) -> None:
    """A plain request's answer goes from the worker straight to the ingress's inbox, one bus crossing
    fewer. The worker also publishes the cache fill, before the answer, as the router would have; the
    router asks for the answer itself as the outcome only when single-flight followers may need it."""
    onward[Headers.ANSWER_TO] = ctx.reply
    if (fill := _fill_headers(ctx.headers)) is not None:
        onward[Headers.FILL_TO] = fill_subject
        onward.update(fill)
    if ctx.headers.get(Headers.CACHE_KEY) and "no-cache" not in ctx.headers.get(Headers.CACHE_CONTROL, ""):
        onward[Headers.OUTCOME] = "result"  # `_route` runs it as a single flight


class Calls(Protocol):
    """What the router needs of the bus (`bus.Bus` is one): ask a provider's workers, directly or through
    its admission queue, and publish (fills, breaker events, a stream's last error)."""

    async def request(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float | None = None) -> tuple[Reply, bus.Answer]: ...

    async def enqueue(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float = ...) -> tuple[Reply, bus.Answer]: ...

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      reply: str = "") -> None: ...


class Router:
    def __init__(self, config: Config, calls: Calls) -> None:
        self.config = config
        self.calls = calls
        self.instance = ""  # this replica's id on the bus, set by `start`
        self.routes = Routes(config)
        self.subjects = Subjects(config.prefix)
        self.default_timeout = config.ingress.request_timeout_seconds
        self.heartbeat = bus.HEARTBEAT_SECONDS
        self.breakers: dict[str, Breaker] = {}
        self.stats: dict[str, strategy.TargetStats] = {}
        self.inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self.rng = random.Random()

    async def start(self, server: bus.Server) -> None:
        self.instance = server.id
        await server.endpoint("route", self.subjects.route, Queues.ROUTER,
                              bus.Endpoint(msgspec.msgpack.Decoder(_ModelOnly).decode, self.handle))
        await server.endpoint("count_tokens", self.subjects.count_tokens, Queues.ROUTER,
                              bus.Endpoint(msgspec.msgpack.Decoder(_ModelOnly).decode, self.count_tokens))
        await EmbeddingRoutes(self).start(server)
        await server.listen(self.subjects.breaker, self.on_breaker_event)
        await server.health_endpoint(self.subjects.health("router"), self.health)

    async def handle(self, request: _ModelOnly, ctx: bus.Context) -> bus.Raw | None:
        """The provider's answer as it sent it, or None when the client already has it (a stream's frames,
        a worker's direct answer)."""
        request_id.set(ctx.request_id)
        with tracing.span("route", ctx.headers, SpanKind.SERVER) as span:
            try:
                answered = await self._route(request.model, ctx)
            except GatewayError as exc:
                tracing.failed(span, exc.http_status, exc.message)
                raise
        return None if answered.delivered or answered.data is None else bus.Raw(answered.data)

    async def _route(self, model: str, ctx: bus.Context) -> Answered:
        targets = self.routes.resolve(model)
        key = ctx.headers.get(Headers.CACHE_KEY)
        if ctx.streaming or not key or "no-cache" in ctx.headers.get(Headers.CACHE_CONTROL, ""):
            return await self._call(ctx, model, targets)
        return await self._single_flight(key, self._call(ctx, model, targets))

    async def count_tokens(self, request: _ModelOnly, ctx: bus.Context) -> bus.Raw:
        """A count-tokens request: the model's targets in the strategy's order (open breakers last), the
        first whose worker answers counts. A count is not an answer: it neither feeds breakers nor retries."""
        request_id.set(ctx.request_id)
        model = request.model
        onward = {name: ctx.headers[name] for name in _PASSED_ON if name in ctx.headers}
        now = time.monotonic()
        ordered = strategy.order(self.routes.strategy(model), self.routes.resolve(model), self.stats, self.rng,
                                 self.config.router.hybrid_latency_weight)
        ordered.sort(key=lambda t: not self.breaker(t).available(now))
        error: GatewayError = Unavailable(f"no target could count tokens for `{model}`")
        for target in ordered:
            onward[Headers.TARGET_MODEL] = target.model
            subject = self.subjects.provider_count_tokens(target.provider)
            try:
                reply, answer = await self.calls.request(subject, ctx.data, onward,
                                                         ctx.remaining(self.default_timeout))
            except bus.NoResponders:
                error = Unavailable(f"no worker is running for provider `{target.provider}`",
                                    code="no_provider_worker", where=f"provider:{target.provider}")
                continue
            match reply:
                case TokenCount():
                    return bus.Raw(answer.data)
                case ErrorReply():
                    error = from_reply(reply)
                    if reply.status in _NO_FALLBACK_STATUS:
                        break
        raise error

    async def _single_flight(self, key: str, call: Coroutine[Any, Any, Answered]) -> Answered:
        """Identical requests in flight together share one upstream call (per router replica). When the
        leader's client leaves, its call is closed: a follower then makes its own."""
        while (leader := self.inflight.get(key)) is not None:
            try:
                data = await asyncio.shield(leader)
            except GatewayError as exc:
                if exc.code != "client_disconnected":
                    call.close()
                    raise
                continue  # the leader's client left: its call was closed, not answered
            if data is None:
                continue  # the leader's answer went to its client only: nothing to share, ask ourselves
            call.close()
            return Answered(data, delivered=False)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            answered = await call
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a leader without followers logs nothing
            raise
        else:
            future.set_result(answered.data)
            return answered
        finally:
            del self.inflight[key]

    async def _call(self, ctx: bus.Context, model: str, targets: list[Target]) -> Answered:
        """Try targets in the strategy's order, retrying each while that helps, within the deadline."""
        headers = ctx.headers
        onward = {name: headers[name] for name in _PASSED_ON if name in headers}
        tracing.inject(onward)
        if ctx.streaming:
            # Chunks go from the worker straight to the ingress; the router hears only the outcome.
            onward[Headers.STREAM_TO] = ctx.reply
        elif ctx.reply:
            _answer_directly(onward, ctx, self.subjects.cache_fill)
        now = time.monotonic()
        ordered = strategy.order(self.routes.strategy(model), targets, self.stats, self.rng,
                                 self.config.router.hybrid_latency_weight)
        candidates = [t for t in ordered if self.breaker(t).available(now)]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("routing %s (%s): %s; breaker open: %s", model, self.routes.strategy(model),
                      [t.key for t in candidates] or "none",
                      [t.key for t in ordered if t not in candidates] or "none")
        last_resort = not candidates
        if last_resort:  # nowhere else to go: one call at a time probes (breaker.py), the others get a 503
            candidates = [t for t in ordered if self.breaker(t).can_probe(now)]
            if not candidates:
                raise Unavailable(f"Every target for `{model}` is failing; its circuit breakers are open.",
                                  code="all_targets_unavailable")
        error: GatewayError | None = None  # the last target's, raised when none answered
        window: int | None = None  # set after a context-window error: only larger targets may follow
        for target in candidates:
            if window is not None and (target.context_window or 0) <= window:
                continue
            outcome = await self._try_target(target, ctx, onward, last_resort)
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
        raise error or Unavailable(f"no target could serve `{model}`")

    async def _try_target(
        self, target: Target, ctx: bus.Context, onward: dict[str, str], last_resort: bool = False
    ) -> Answered | GatewayError:
        """How the call ended well, or the error to move on with. `last_resort`: every target's breaker
        is open, so this one probes without waiting its cooldown."""
        _address(onward, target)
        breaker = self.breaker(target)
        deadline = ctx.deadline
        attempt = 0
        while True:
            attempt += 1
            if not breaker.allow(time.monotonic(), last_resort):
                return Unavailable(f"`{target.key}` is failing; its circuit breaker is open.",
                                   code="target_unavailable", where=f"provider:{target.provider}")
            started = time.monotonic()
            # A first attempt at debug (the ingress's completion line names the provider, and a fallback
            # follows a "moving on" line at info); a retry at info.
            log.log(logging.DEBUG if attempt == 1 else logging.INFO, "calling %s (attempt %d)", target.key, attempt)
            try:
                reply, answer = await self._ask_live(target, ctx, onward, deadline)
            except bus.Lost as lost:
                breaker.release()  # our worker died: nothing learnt about the target
                return await self._lost(target, ctx, lost)
            except bus.NoResponders:
                await self._outcome(target, ok=False)
                return Unavailable(f"no worker is running for provider `{target.provider}`",
                                   code="no_provider_worker", where=f"provider:{target.provider}")
            except DeadlineExceeded:
                breaker.release()  # the client's own deadline says nothing about the target
                raise
            match reply:
                case ChatResult() | Delivered():
                    return await self._succeeded(target, ctx, reply, answer.data, started,
                                                 direct=Headers.ANSWER_TO in onward,
                                                 filled=Headers.FILL_TO in onward)
                case ErrorReply(stream_started=True):
                    await self._outcome(target, ok=reply.code == "client_disconnected")
                    return Answered(None, delivered=True)  # the worker ended the client's stream with it
                case ErrorReply(code="client_disconnected"):
                    breaker.release()  # the client left and the worker closed the call: nothing to learn
                    raise from_reply(reply)  # and nobody to answer elsewhere
                case ErrorReply():
                    step = await self.after_error(target, breaker, reply, attempt, deadline)
                    if isinstance(step, GatewayError):
                        return step
                    await asyncio.sleep(step)
                case _:
                    return GatewayError(f"unexpected reply for {target.key}")

    async def after_error(self, target: Target, breaker: Breaker, reply: ErrorReply, attempt: int,
                          deadline: float | None, no_fallback: frozenset[int] = _NO_FALLBACK_STATUS
                          ) -> float | GatewayError:
        """A target's error answer (chat's or embeddings'): the wait before asking it again, or the error to
        move on with; raised when the client's own deadline ran out at the worker (no time to move on)."""
        error = from_reply(reply)
        if reply.status in no_fallback:
            breaker.release()
            return error  # the caller's own fault: not the target's, not worth a retry
        time_left = bus.remaining(deadline, self.default_timeout)
        if reply.status == 504 and time_left <= _DEADLINE_SLACK_SECONDS:
            breaker.release()
            raise error
        await self._failed(target, breaker, reply.status)
        retry = self.config.router.retry
        delay = (retry_delay(attempt, reply.retry_after, time_left, retry, self.rng)
                 if reply.retryable and attempt < retry.attempts else None)
        if delay is None:
            log.info("target %s failed (%d), moving on", target.key, reply.status)
            return error
        metrics.RETRIES.labels(target.key).inc()
        log.info("target %s failed (%d), retrying in %.2fs", target.key, reply.status, delay)
        return delay

    async def _succeeded(self, target: Target, ctx: bus.Context, reply: ChatResult | Delivered, data: bytes,
                         started: float, direct: bool, filled: bool) -> Answered:
        """A target's answer: counted, timed, and filled into the cache unless the worker did (`filled`)."""
        await self._outcome(target, ok=True)
        if ctx.streaming and isinstance(reply, ChatResult):
            seconds = reply.first_chunk_seconds or 0.0  # what "least latency" means for a stream
        else:
            seconds = time.monotonic() - started
        if (stats := self.stats.get(target.key)) is None:
            stats = self.stats[target.key] = strategy.TargetStats()
        stats.observe(seconds)
        if isinstance(reply, Delivered):
            return Answered(None, delivered=True)
        if not filled:
            # The fill goes first (a buffered publish, it does not delay the reply) so that a client
            # repeating the request at once already finds it in every L1.
            await self._fill(ctx.headers, data)
        return Answered(data, delivered=ctx.streaming or direct)

    async def _failed(self, target: Target, breaker: Breaker, status: int) -> None:
        """A target's error answer, for its breaker. A 429 is the provider asking us to slow down: the
        target works, so it is no failure (a storm of them would shut the model for a cooldown)."""
        if status == 429:
            metrics.PROVIDER_UP.labels(target.provider).set(0)  # the last call did not succeed, all the same
            breaker.release()
        else:
            await self._outcome(target, ok=False)

    async def _ask_live(self, target: Target, ctx: bus.Context, onward: dict[str, str], deadline: float | None
                        ) -> tuple[Reply, bus.Answer]:
        """Ask a worker; when it dies holding the call (`Lost`), ask again (a live one takes it), unless
        it was a stream the client already has part of."""
        for lost_so_far in range(LOST_RETRIES + 1):
            try:
                return await self._ask(target, ctx.data, onward, deadline)
            except bus.Lost as lost:
                if lost.started or lost_so_far == LOST_RETRIES:
                    raise
                log.warning("a %s worker went silent mid-call; asking a live one", target.provider)
        raise AssertionError("unreachable")

    async def _lost(self, target: Target, ctx: bus.Context, lost: bus.Lost) -> GatewayError | Answered:
        if not lost.started:
            return Unavailable(f"the workers of `{target.provider}` kept going silent",
                               code="provider_worker_lost", where=f"provider:{target.provider}")
        # Part of the answer reached the client: restarting it elsewhere would repeat it. One clear end.
        log.warning("a %s worker died mid-stream; ending the stream", target.provider)
        error = ProviderError("The worker serving this stream stopped; the stream was ended, not restarted.",
                              code="stream_lost", where=f"provider:{target.provider}")
        reply = msgspec.structs.replace(error.to_reply(), stream_started=True)
        await self.calls.publish(ctx.reply, encode(reply))
        if ctx.bus_id:  # a queued copy the work queue may redeliver must not run for nobody
            await self.calls.publish(self.subjects.cancel, b"", {Headers.BUS_ID: ctx.bus_id})
        return Answered(None, delivered=True)

    async def _ask(self, target: Target, payload: bytes, onward: dict[str, str], deadline: float | None
                   ) -> tuple[Reply, bus.Answer]:
        """Straight to the provider's workers, or through its admission queue when it has a cap."""
        timeout = bus.remaining(deadline, self.default_timeout)
        if self.config.providers[target.provider].max_in_flight:
            return await self.calls.enqueue(self.subjects.admission(target.provider), payload, onward, timeout,
                                            self.heartbeat)
        return await self.calls.request(self.subjects.provider_chat(target.provider), payload, onward, timeout,
                                        self.heartbeat)

    def breaker(self, target: Target) -> Breaker:
        found = self.breakers.get(target.key)
        if found is None:
            found = self.breakers[target.key] = Breaker(self.config.router.breaker)
        return found

    async def _outcome(self, target: Target, ok: bool) -> None:
        """Count a call's outcome on the target's breaker, and tell the other replicas what they must count
        too (docs/ROUTING.md): every failure, and the first success after failures."""
        _PROVIDER_UP(target.provider).set(1 if ok else 0)
        breaker = self.breaker(target)
        now = time.monotonic()
        report = breaker.worth_reporting(ok)
        if report:
            event = BreakerEvent(target=target.key, origin=self.instance, failed=not ok,
                                 successes=breaker.take_unreported(now))
            await self.calls.publish(self.subjects.breaker, encode(event))
        changed = breaker.record(ok, now, reported=report)
        if changed is not None:
            await self._breaker_changed(target.key, changed)

    async def _breaker_changed(self, key: str, state: str) -> None:
        log.warning("circuit breaker for %s is now %s", key, state)
        metrics.BREAKER_OPEN.labels(key).set(1 if state == "open" else 0)
        event = BreakerEvent(target=key, state=state, origin=self.instance)  # type: ignore[arg-type]
        await self.calls.publish(self.subjects.breaker, encode(event))

    async def on_breaker_event(self, data: bytes, headers: Mapping[str, str]) -> None:
        event = breaker_decoder.decode(data)
        if event.origin == self.instance:
            return
        breaker = self.breakers.get(event.target)
        if breaker is None:
            breaker = self.breakers[event.target] = Breaker(self.config.router.breaker)
        if event.state is None:  # another replica's observation: counted here as if seen here
            changed = breaker.count_remote(event.failed, event.successes, time.monotonic())
            if changed is not None:
                await self._breaker_changed(event.target, changed)
            return
        breaker.apply(event.state, time.monotonic())
        metrics.BREAKER_OPEN.labels(event.target).set(1 if event.state == "open" else 0)

    def health(self) -> HealthReport:
        """Degraded while some target's breaker is open; down when every target known (configured or
        used) has an open breaker: nothing can be answered until a cooldown ends."""
        now = time.monotonic()
        checks: dict[str, str] = {
            f"breaker {key}": b.state for key, b in self.breakers.items() if b.state != "closed"}
        targets = {t.key for route in self.config.models for t in route.targets} | set(self.breakers)
        shut = {key for key, b in self.breakers.items() if not b.available(now)}
        status: Literal["up", "degraded", "down"] = (
            "down" if targets and shut >= targets else "degraded" if shut else "up")
        return HealthReport(service="router", instance=self.instance, status=status, checks=checks)

    async def _fill(self, headers: Mapping[str, str], data: bytes) -> None:
        if (fill := _fill_headers(headers)) is not None:
            await self.calls.publish(self.subjects.cache_fill, data, headers=fill)


async def serve(config: Config, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port, expose=config.metrics_enabled)
    connection = await bus.connect(config.nats_url, SERVICE_ROUTER)
    server = bus.Server(connection, SERVICE_ROUTER, "0.1.0", "LLM Edge router: targets, fallback, cache fill")
    await server.start()
    await Router(config, connection).start(server)
    log.info("router ready")
    runtime.notify_ready(runtime.taking_work(connection, stop))
    await stop.wait()
    await server.drain()
