"""The provider worker: one process per provider, serving `llm.provider.<name>.chat` in a queue group.

It decodes the unified request, lets the adapter build the upstream call, sends it on one pooled HTTP
client, and answers with the unified result or an error mapped at this boundary (status -> retryable).
Work whose deadline has already passed is dropped before any upstream call is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import msgspec
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind

from services.providers import streaming
from services.providers.admission import QueueConsumer
from services.providers.base import HttpAdapter, LocalAdapter
from services.providers.http import Upstream
from services.providers.registry import ADAPTERS
from shared import bus, metrics, pricing, runtime, tracing
from shared.config import Config, ProviderSettings
from shared.errors import DeadlineExceeded, GatewayError, ProviderError
from shared.logs import request_id
from shared.messages import ChatRequest, ChatResult, HealthReport, Usage, encode, request_decoder
from shared.subjects import Headers, Queues, Subjects, provider_service_name

log = logging.getLogger("llm_edge.provider")


class ProviderWorker:
    def __init__(self, config: Config, name: str, server: bus.Server) -> None:
        self.name = name
        self.settings: ProviderSettings = config.provider(name)
        self.adapter = ADAPTERS[self.settings.adapter]
        # Decided once: a runtime Protocol check costs microseconds on every request.
        self.local = isinstance(self.adapter, LocalAdapter)
        self.server = server
        self.subjects = Subjects(config.prefix)
        self.upstream = Upstream(name, self.settings.max_connections)
        # Streams in flight by request id, so a cancel notice can stop the right upstream call.
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.active = metrics.ACTIVE.labels(f"provider.{name}")
        self.queue: QueueConsumer | None = None
        self.max_age = config.ingress.request_timeout_seconds + 60

    async def start(self) -> None:
        await self.server.endpoint(
            "chat",
            self.subjects.provider_chat(self.name),
            Queues.provider(self.name),
            self.handle,
            limit=self.settings.max_concurrency,
        )
        await self.server.subscribe(self.subjects.cancel, self.cancel)
        if self.settings.max_in_flight:
            self.queue = QueueConsumer(self, self.settings.max_in_flight, self.max_age)
            await self.queue.start()
        await self.server.health_endpoint(self.subjects.health(f"provider.{self.name}"), self.health)

    def health(self) -> HealthReport:
        checks = {}
        if self.queue is not None:
            checks = {"queue_depth": str(self.queue.depth), "max_in_flight": str(self.queue.cap)}
        return HealthReport(service=f"provider.{self.name}", instance=self.server.id, checks=checks)

    async def stop_queue(self) -> None:
        if self.queue is not None:
            await self.queue.stop()

    async def close(self) -> None:
        await self.upstream.close()

    async def handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        request_id.set(headers.get(Headers.REQUEST_ID))
        left = bus.remaining(bus.deadline_from(headers), self.settings.timeout_seconds)
        if left <= 0:
            raise DeadlineExceeded("deadline passed before the provider was called", where=self.where)
        request = request_decoder.decode(msg.data)
        model = headers.get(Headers.TARGET_MODEL) or request.model
        self.active.inc()
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                      "gen_ai.provider.name": self.name}
        try:
            with tracing.span(f"chat {model}", headers, SpanKind.CLIENT, attributes) as span:
                await self._serve(msg, request, model, left, span)
        finally:
            self.active.dec()

    async def _serve(self, msg: Msg, request: ChatRequest, model: str, left: float, span: Span | None) -> None:
        headers = msg.headers or {}
        if headers.get(Headers.STREAM) == "1":
            await streaming.serve_stream(self, msg, request, model, min(left, self.settings.timeout_seconds))
            return
        started = time.perf_counter()
        try:
            result = await self.complete(request, model, min(left, self.settings.timeout_seconds))
        except GatewayError as exc:
            self.account(model, None, exc.http_status, time.perf_counter() - started)
            tracing.failed(span, exc.http_status, exc.message)
            raise
        elapsed = time.perf_counter() - started
        cost = self.account(model, result.usage, 200, elapsed)
        tracing.record_usage(span, self.name, result.model, result.usage)
        result = msgspec.structs.replace(result, provider=self.name, provider_seconds=elapsed, cost_usd=cost)
        await self.server.nc.publish(msg.reply, encode(result))

    def account(self, model: str, usage: Usage | None, status: int, seconds: float) -> float:
        """Count one upstream call in the metrics; the answer's cost in USD (0 when unpriced)."""
        metrics.PROVIDER_REQUESTS.labels(self.name, model, str(status)).inc()
        metrics.PROVIDER_DURATION.labels(self.name, model).observe(seconds)
        if usage is None:
            return 0.0
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        metrics.TOKENS.labels(self.name, model, "input").inc(usage.prompt_tokens - cached)
        metrics.TOKENS.labels(self.name, model, "cached").inc(cached)
        metrics.TOKENS.labels(self.name, model, "output").inc(usage.completion_tokens)
        cost = pricing.table().cost(model, usage)
        if cost is None:
            metrics.UNPRICED.labels(self.name, model).inc()
            return 0.0
        metrics.COST.labels(self.name, model).inc(cost)
        return cost

    async def cancel(self, msg: Msg) -> None:
        rid = (msg.headers or {}).get(Headers.REQUEST_ID)
        if rid and (task := self.streams.get(rid)) is not None:
            log.info("client disconnected; closing the upstream call")
            task.cancel()

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
        call = adapter.build_request(request, model, self.settings)
        response = await self.upstream.send(call, timeout)
        if response.status >= 400:
            log.info("provider %s answered %d", self.name, response.status)
            raise adapter.parse_error(response.status, response.body, response.headers, provider=self.name)
        try:
            return adapter.parse_response(response.body, provider=self.name, model=model)
        except GatewayError:
            raise
        except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                f"{self.name}: malformed response body", code="provider_bad_response", where=self.where
            ) from exc


async def serve(config: Config, name: str, stop: asyncio.Event) -> None:
    metrics.serve(config.metrics_port)
    nc = await bus.connect(config.nats_url, provider_service_name(name))
    server = bus.Server(nc, provider_service_name(name), "0.1.0", f"LLM Edge provider worker: {name}")
    await server.start()
    worker = ProviderWorker(config, name, server)
    await worker.start()
    log.info("provider worker %s ready", name)
    runtime.notify_ready(runtime.taking_work(nc, stop))
    await stop.wait()
    await worker.stop_queue()
    await server.drain()
    await worker.close()
