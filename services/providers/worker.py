"""The provider worker: one process per provider, serving `llm.provider.<name>.chat` in a queue group.

It decodes the unified request, lets the adapter build the upstream call, sends it on one pooled HTTP
client, and answers with the unified result or an error mapped at this boundary (status -> retryable).
Work whose deadline has already passed is dropped before any upstream call is made. With `max_in_flight`
it also takes requests from the provider's admission queue (shared/bus/workqueue.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import msgspec
from opentelemetry.trace import SpanKind

from services.providers import streaming, tokens
from services.providers.base import AuthorizingAdapter, CountingAdapter, HttpAdapter, HttpCall, LocalAdapter
from services.providers.embedding import Embedder
from services.providers.http import Upstream, Waits
from services.providers.registry import ADAPTERS
from shared import bus, metrics, pricing, runtime, secrets, tracing
from shared.config import Config, ProviderSettings
from shared.errors import DeadlineExceeded, GatewayError, ProviderError
from shared.logs import request_id
from shared.messages import (
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    HealthReport,
    StreamChunk,
    StreamEnd,
    TokenCount,
    Usage,
    embedding_request_decoder,
    request_decoder,
)
from shared.subjects import Queues, Subjects, provider_service_name

log = logging.getLogger("llm_edge.provider")
# What `ProviderWorker.metered` counts: an answer with usage, the model that gave it, its provider, time and cost.
Metered = TypeVar("Metered", ChatResult, EmbeddingResult)


class ProviderWorker:
    def __init__(self, config: Config, name: str) -> None:
        self.name = name
        self.settings: ProviderSettings = config.provider(name)
        self.adapter = ADAPTERS[self.settings.adapter]
        # Decided once: a runtime Protocol check costs microseconds on every request.
        self.local = isinstance(self.adapter, LocalAdapter)
        self.auth = (self.adapter.authorizer(self.settings, provider=name)
                     if isinstance(self.adapter, AuthorizingAdapter) else None)
        self.instance = ""
        self.subjects = Subjects(config.prefix)
        self.upstream = Upstream(name, self.settings.max_connections, Waits.of(self.settings))
        self.active = metrics.ACTIVE.labels(f"provider.{name}")
        self.queue: bus.QueueConsumer | None = None
        self.max_age = config.ingress.request_timeout_seconds + 60
        self.replicas = config.jetstream_replicas
        self.default_timeout = config.ingress.request_timeout_seconds
        self.redact = secrets.Redactor(secrets.configured(config))
        self.endpoint = bus.Endpoint(request_decoder.decode, self.chat, self.stream)
        self.embedder = Embedder(self)

    async def start(self, server: bus.Server) -> None:
        self.instance = server.id
        await server.endpoint("chat", self.subjects.provider_chat(self.name), Queues.provider(self.name),
                              self.endpoint, cancels=self.subjects.cancel, limit=self.settings.max_concurrency)
        await server.endpoint("count_tokens", self.subjects.provider_count_tokens(self.name),
                              Queues.provider(self.name), bus.Endpoint(request_decoder.decode, self.count_tokens),
                              limit=self.settings.max_concurrency)
        await server.endpoint("embed", self.subjects.provider_embed(self.name), Queues.provider(self.name),
                              bus.Endpoint(embedding_request_decoder.decode, self.embedder.embed),
                              cancels=self.subjects.cancel, limit=self.settings.max_concurrency)
        if cap := self.settings.max_in_flight:
            self.queue = bus.QueueConsumer(
                server, self.endpoint, self.subjects.admission_stream(self.name),
                self.subjects.admission(self.name), cap, self.max_age, self.settings.max_concurrency,
                on_taken=metrics.QUEUE_WAIT.labels(self.name).observe, on_depth=self._depth,
                replicas=self.replicas)
            await self.queue.start()
        await server.health_endpoint(self.subjects.health(f"provider.{self.name}"), self.health)

    def _depth(self, queued: int, in_flight: int) -> None:
        metrics.QUEUE_DEPTH.labels(self.name).set(queued)
        metrics.IN_FLIGHT.labels(self.name).set(in_flight)

    def health(self) -> HealthReport:
        checks = {}
        if self.queue is not None:
            checks = {"queue_depth": str(self.queue.pending), "max_in_flight": str(self.queue.cap)}
        return HealthReport(service=f"provider.{self.name}", instance=self.instance, checks=checks)

    async def stop_queue(self) -> None:
        if self.queue is not None:
            await self.queue.stop()

    async def close(self) -> None:
        await self.upstream.close()
        if self.auth is not None:
            await self.auth.close()

    async def authorized(self, call: HttpCall, timeout: float) -> HttpCall:
        """`call` with the run-time credentials added (a cloud credential chain), if the adapter has any;
        a credential fetch that outlasts the request's deadline ends it."""
        if self.auth is None:
            return call
        try:
            async with asyncio.timeout(timeout):
                return await self.auth.authorize(call)
        except TimeoutError:
            raise DeadlineExceeded("deadline passed while fetching the provider's credentials",
                                   where=self.where) from None

    def time_left(self, ctx: bus.Context) -> float:
        """Seconds this call may take: what is left of the request's deadline, the only total (the
        upstream's own waits, connect, first byte and idle, are the HTTP client's: services/providers/http.py);
        without a deadline (a bare bus request), the ingress's default."""
        left = ctx.remaining(self.default_timeout)
        if left <= 0:
            raise DeadlineExceeded("deadline passed before the provider was called", where=self.where)
        return left

    async def chat(self, request: ChatRequest, ctx: bus.Context) -> ChatResult:
        request_id.set(ctx.request_id)
        timeout = self.time_left(ctx)
        model = streaming.target_model(request, ctx)
        return await self.metered("chat", model, ctx, lambda: self.complete(request, model, timeout))

    async def metered(self, operation: str, model: str, ctx: bus.Context, call: Callable[[], Awaitable[Metered]]
                      ) -> Metered:
        """One upstream call (chat's or embeddings'), counted: in flight, its span, its metrics and cost; the
        result names the provider, the call's time and its cost."""
        self.active.inc()
        try:
            with tracing.span(f"{operation} {model}", ctx.headers, SpanKind.CLIENT,
                              self.attributes(model, operation)) as span:
                started = time.perf_counter()
                try:
                    result = await call()
                except GatewayError as exc:
                    self.account(model, None, exc.http_status, time.perf_counter() - started)
                    tracing.failed(span, exc.http_status, exc.message)
                    raise
                elapsed = time.perf_counter() - started
                cost = self.account(model, result.usage, 200, elapsed, reported=result.model,
                                    prices=streaming.target_prices(ctx))
                tracing.record_usage(span, self.name, result.model, result.usage)
                return msgspec.structs.replace(result, provider=self.name, provider_seconds=elapsed, cost_usd=cost)
        finally:
            self.active.dec()

    def stream(self, request: ChatRequest, ctx: bus.Context) -> AsyncIterator[StreamChunk | StreamEnd | ChatResult]:
        return streaming.frames(self, request, ctx)

    def attributes(self, model: str, operation: str = "chat") -> dict[str, str]:
        return {"gen_ai.operation.name": operation, "gen_ai.request.model": model, "gen_ai.provider.name": self.name}

    def account(self, model: str, usage: Usage | None, status: int, seconds: float, *, reported: str = "",
                prices: tuple[float | None, float | None] = (None, None)) -> float:
        """Count one upstream call in the metrics; the answer's cost in USD (0 when unpriced).

        The price is the table's for the model the answer reports (`reported`: an Azure deployment answers
        with the name of the model behind it, a dated snapshot with its date), else for the `model` asked
        for, with the target's configured `prices` (USD per 1M input and output tokens) over it."""
        _PROVIDER_REQUESTS(self.name, model, str(status)).inc()
        _PROVIDER_DURATION(self.name, model).observe(seconds)
        if usage is None:
            return 0.0
        cached, written = usage.cache_read_tokens, usage.cache_creation_tokens
        _TOKENS(self.name, model, "input").inc(max(0, usage.prompt_tokens - cached - written))
        _TOKENS(self.name, model, "cached").inc(cached)
        _TOKENS(self.name, model, "cache_write").inc(written)
        _TOKENS(self.name, model, "output").inc(usage.completion_tokens)
        known = (pricing.known_price(reported) if reported else None) or pricing.known_price(model)
        price = pricing.configured(known, *prices)
        cost = price.cost(usage) if price is not None else None
        if cost is None:
            _UNPRICED(self.name, model).inc()
            return 0.0
        _COST(self.name, model).inc(cost)
        return cost

    async def count_tokens(self, request: ChatRequest, ctx: bus.Context) -> TokenCount:
        """A request's input tokens: counted by the provider when it can (Anthropic), else estimated here."""
        request_id.set(ctx.request_id)
        timeout = self.time_left(ctx)
        model = streaming.target_model(request, ctx)
        if isinstance(self.adapter, CountingAdapter) and not self.local:
            call = await self.authorized(self.adapter.build_count_request(request, model, self.settings), timeout)
            response = await self.upstream.send(call, timeout)
            if response.status >= 400:
                log.info("provider %s answered %d to count_tokens", self.name, response.status)
                raise cast(HttpAdapter[Any], self.adapter).parse_error(
                    response.status, response.body, response.headers, provider=self.name)
            return self.adapter.parse_count(response.body, provider=self.name, model=model)
        estimate = await asyncio.to_thread(tokens.estimate, request, model)  # see tokens.py: the first loads
        return TokenCount(input_tokens=estimate, provider=self.name, model=model, estimated=True)

    @property
    def where(self) -> str:
        return f"provider:{self.name}"

    async def complete(self, request: ChatRequest, model: str, timeout: float) -> ChatResult:
        adapter = self.adapter
        if self.local:
            return await adapter.complete(request, model, self.settings)  # type: ignore[union-attr]
        return await self._call_http(cast(HttpAdapter[Any], adapter), request, model, timeout)

    async def _call_http(
        self, adapter: HttpAdapter[Any], request: ChatRequest, model: str, timeout: float
    ) -> ChatResult:
        call = await self.authorized(adapter.build_request(request, model, self.settings), timeout)
        try:
            response = await self.upstream.send(call, timeout)
            if response.status >= 400:
                log.info("provider %s answered %d", self.name, response.status)
                raise adapter.parse_error(response.status, response.body, response.headers, provider=self.name)
            try:
                return adapter.parse_response(response.body, provider=self.name, model=model)
            except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
                raise ProviderError(
                    f"{self.name}: malformed response body", code="provider_bad_response", where=self.where
                ) from exc
        except GatewayError as exc:
            self.redacted(exc, call)
            raise

    def redacted(self, error: GatewayError, call: HttpCall) -> GatewayError:
        """`error` with every secret removed from its message: the upstream wrote that text, and a
        misbehaving one echoes what it was sent. Done here, the one place that knows the secrets."""
        error.message = self.redact(error.message, call.secret_values())
        error.args = (error.message,)
        return error


async def serve(config: Config, name: str, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port, expose=config.metrics_enabled)
    connection = await bus.connect(config.nats_url, provider_service_name(name))
    server = bus.Server(connection, provider_service_name(name), "0.1.0", f"LLM Edge provider worker: {name}")
    await server.start()
    worker = ProviderWorker(config, name)
    await worker.start(server)
    log.info("provider worker %s ready", name)
    runtime.notify_ready(runtime.taking_work(connection, stop))
    await stop.wait()
    await worker.stop_queue()
    await server.drain()
    await worker.close()


_PROVIDER_REQUESTS = metrics.Children(metrics.PROVIDER_REQUESTS)
_PROVIDER_DURATION = metrics.Children(metrics.PROVIDER_DURATION)
_TOKENS = metrics.Children(metrics.TOKENS)
_UNPRICED = metrics.Children(metrics.UNPRICED)
_COST = metrics.Children(metrics.COST)
