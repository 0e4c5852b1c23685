"""The router's embeddings: `llm.embed`, an `EmbeddingRequest` in, the provider's `EmbeddingResult` bytes out.

The same targets, strategy, breakers, retries and fallback as chat (the `Router`'s own state: a target that
fails embeddings is failing for chat too), over the workers' `provider.<name>.embed` subject. Embeddings
have no stream, no single flight and no admission queue, so this loop is the chat loop without them (kept
apart so the chat path can change without touching it). With `Llm-Cache-Key` (the requester's key scope)
each input's vector is broadcast on `cache.fill.vectors`, so every cache tier holds it under its own key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from services.router import strategy
from shared import bus, tracing
from shared.cache import vectors
from shared.config import Target
from shared.errors import DeadlineExceeded, GatewayError, Unavailable, from_reply
from shared.logs import request_id
from shared.messages import (
    EmbeddingRequest,
    EmbeddingResult,
    ErrorReply,
    Reply,
    VectorFill,
    embedding_request_decoder,
    encode,
)
from shared.pricing import prices_header
from shared.subjects import Headers, Queues

if TYPE_CHECKING:
    from services.router.service import Router

log = logging.getLogger("llm_edge.router")

_NO_FALLBACK_STATUS = frozenset({400, 404, 413, 422})
_PASSED_ON = (Headers.REQUEST_ID, Headers.BUS_ID, Headers.DEADLINE, Headers.TRACEPARENT)
LOST_RETRIES = 2


class EmbeddingRoutes:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def start(self, server: bus.Server) -> None:
        await server.endpoint("embed", self.router.subjects.embed, Queues.ROUTER,
                              bus.Endpoint(embedding_request_decoder.decode, self.handle))

    async def handle(self, request: EmbeddingRequest, ctx: bus.Context) -> bus.Raw:
        request_id.set(ctx.request_id)
        with tracing.span("embed", ctx.headers, SpanKind.SERVER) as span:
            try:
                result, data = await self._route(request.model, ctx)
            except GatewayError as exc:
                tracing.failed(span, exc.http_status, exc.message)
                raise
        await self._fill(request, ctx, result)
        return bus.Raw(data)

    async def _route(self, model: str, ctx: bus.Context) -> tuple[EmbeddingResult, bytes]:
        router = self.router
        targets = router.routes.resolve(model)
        onward = {name: ctx.headers[name] for name in _PASSED_ON if name in ctx.headers}
        tracing.inject(onward)
        now = time.monotonic()
        ordered = strategy.order(router.routes.strategy(model), targets, router.stats, router.rng,
                                 router.config.router.hybrid_latency_weight)
        candidates = [t for t in ordered if router.breaker(t).available(now)]
        last_resort = not candidates
        if last_resort:  # as for chat: one call at a time probes an open breaker, the others get a 503
            candidates = [t for t in ordered if router.breaker(t).can_probe(now)]
            if not candidates:
                raise Unavailable(f"Every target for `{model}` is failing; its circuit breakers are open.",
                                  code="all_targets_unavailable")
        error: GatewayError = Unavailable(f"no target could serve `{model}`")
        for target in candidates:
            outcome = await self._try_target(target, ctx, onward, last_resort)
            if isinstance(outcome, GatewayError):
                error = outcome
                if outcome.http_status in _NO_FALLBACK_STATUS:
                    raise outcome
                continue
            return outcome
        raise error

    async def _try_target(self, target: Target, ctx: bus.Context, onward: dict[str, str], last_resort: bool
                          ) -> tuple[EmbeddingResult, bytes] | GatewayError:
        router = self.router
        _address(onward, target)
        breaker = router.breaker(target)
        attempt = 0
        while True:
            attempt += 1
            if not breaker.allow(time.monotonic(), last_resort):
                return Unavailable(f"`{target.key}` is failing; its circuit breaker is open.",
                                   code="target_unavailable", where=f"provider:{target.provider}")
            started = time.monotonic()
            try:
                reply, answer = await self._ask(target, ctx, onward)
            except bus.Lost:
                breaker.release()
                return Unavailable(f"the workers of `{target.provider}` kept going silent",
                                   code="provider_worker_lost", where=f"provider:{target.provider}")
            except bus.NoResponders:
                await router._outcome(target, ok=False)
                return Unavailable(f"no worker is running for provider `{target.provider}`",
                                   code="no_provider_worker", where=f"provider:{target.provider}")
            except DeadlineExceeded:
                breaker.release()
                raise
            match reply:
                case EmbeddingResult():
                    await router._outcome(target, ok=True)
                    router.stats.setdefault(target.key, strategy.TargetStats()).observe(time.monotonic() - started)
                    return reply, answer.data
                case ErrorReply(code="client_disconnected"):
                    breaker.release()
                    raise from_reply(reply)
                case ErrorReply():
                    step = await router.after_error(target, breaker, reply, attempt, ctx.deadline, _NO_FALLBACK_STATUS)
                    if isinstance(step, GatewayError):
                        return step
                    await asyncio.sleep(step)
                case _:
                    breaker.release()
                    return GatewayError(f"unexpected reply for {target.key}")

    async def _ask(self, target: Target, ctx: bus.Context, onward: dict[str, str]
                   ) -> tuple[Reply, bus.Answer]:
        """The target's workers; one that dies holding the call is replaced by a live one (a retry that
        costs the provider nothing it has not already been asked)."""
        router = self.router
        for lost_so_far in range(LOST_RETRIES + 1):
            try:
                return await router.calls.request(router.subjects.provider_embed(target.provider), ctx.data, onward,
                                                  bus.remaining(ctx.deadline, router.default_timeout), router.heartbeat)
            except bus.Lost:
                if lost_so_far == LOST_RETRIES:
                    raise
                log.warning("a %s worker went silent mid-call; asking a live one", target.provider)
        raise AssertionError("unreachable")

    async def _fill(self, request: EmbeddingRequest, ctx: bus.Context, result: EmbeddingResult) -> None:
        scope = ctx.headers.get(Headers.CACHE_KEY)
        if not scope or "no-store" in ctx.headers.get(Headers.CACHE_CONTROL, ""):
            return
        fill = VectorFill(keys=vectors.keys(scope, request.input), vectors=result.vectors)
        headers = {Headers.CACHE_TTL: ttl} if (ttl := ctx.headers.get(Headers.CACHE_TTL)) else {}
        await self.router.calls.publish(self.router.subjects.vector_fill, encode(fill), headers=headers)


def _address(onward: dict[str, str], target: Target) -> None:
    """The headers that name the target to the worker: its model, and its prices when configured."""
    onward[Headers.TARGET_MODEL] = target.model
    if (prices := prices_header(target.input_price, target.output_price)) is not None:
        onward[Headers.TARGET_PRICES] = prices
    else:
        onward.pop(Headers.TARGET_PRICES, None)  # `onward` is reused for the next target
