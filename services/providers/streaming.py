"""Streaming in the provider worker: upstream events -> numbered chunks, which the bus sends straight to
the ingress inbox, then the assembled answer for the router (the cache fills from it).

An error before the first chunk lets the router try the next target; after it, the bus ends the client's
stream with an error frame and marks the error `stream_started`, so nobody retries behind its back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import msgspec
from opentelemetry.trace import SpanKind

from services.providers.assemble import Assembler
from services.providers.base import Delta, HttpAdapter, StreamSummary
from shared import bus, deadlines, pricing, tracing
from shared.errors import DeadlineExceeded, GatewayError
from shared.logs import request_id
from shared.messages import ChatRequest, ChatResult, StreamChunk, StreamEnd, Usage
from shared.subjects import Headers

if TYPE_CHECKING:
    from services.providers.worker import ProviderWorker

log = logging.getLogger("llm_edge.provider")


async def items(worker: ProviderWorker, request: ChatRequest, model: str, timeout: float
                ) -> AsyncIterator[Delta | StreamSummary]:
    adapter = worker.adapter
    if worker.local:
        async for item in adapter.stream(request, model, worker.settings):  # type: ignore[union-attr]
            yield item
        return
    async for item in _http_items(worker, cast(HttpAdapter[Any], adapter), request, model, timeout):
        yield item


async def _http_items(worker: ProviderWorker, adapter: HttpAdapter[Any], request: ChatRequest, model: str,
                      timeout: float) -> AsyncIterator[Delta | StreamSummary]:
    call = await worker.authorized(adapter.build_stream_request(request, model, worker.settings), timeout)
    parser = adapter.stream_parser(provider=worker.name, model=model)
    decoder = adapter.stream_decoder()
    try:
        async with worker.upstream.open(call, timeout) as body:
            response = body.response
            if response.status >= 400:
                log.info("provider %s answered %d to a stream request", worker.name, response.status)
                raise adapter.parse_error(response.status, await body.read(), response.headers, provider=worker.name)
            async for raw in body.chunks():
                for event, data in decoder.feed(raw):
                    for delta in parser.feed(event, data):  # an error event raises, in the upstream's words
                        yield delta
        yield parser.end()
    except GatewayError as exc:
        worker.redacted(exc, call)
        raise


def target_model(request: ChatRequest, ctx: bus.Context) -> str:
    return ctx.headers.get(Headers.TARGET_MODEL) or request.model


def target_prices(ctx: bus.Context) -> tuple[float | None, float | None]:
    """The route target's configured prices (USD per 1M input, output tokens), when it has any."""
    return pricing.parse_prices_header(ctx.headers.get(Headers.TARGET_PRICES))


async def frames(worker: ProviderWorker, request: ChatRequest, ctx: bus.Context
                 ) -> AsyncIterator[StreamChunk | StreamEnd | ChatResult]:
    """The stream handler: numbered chunks, the end frame, then the assembled answer (for the router and
    the cache). The bus sends the frames to the client's inbox and ends the stream on an error."""
    request_id.set(ctx.request_id)
    timeout = worker.time_left(ctx)
    model = target_model(request, ctx)
    pump = _Pump(worker, ctx.request_id or uuid.uuid4().hex, model, target_prices(ctx))
    started = time.perf_counter()
    worker.active.inc()
    try:
        with tracing.span(f"chat {model}", ctx.headers, SpanKind.CLIENT, worker.attributes(model)) as span:
            try:
                async for frame in pump.run(request, timeout):
                    yield frame
            except GatewayError as exc:
                worker.account(model, None, exc.http_status, time.perf_counter() - started)
                tracing.failed(span, exc.http_status, exc.message)
                log.warning("stream from %s failed after %d chunks: %d %s: %s", worker.name, pump.seq,
                            exc.http_status, exc.code, exc.message)
                raise
            yield pump.result()
    finally:
        worker.active.dec()


class _Pump:
    def __init__(self, worker: ProviderWorker, rid: str, model: str,
                 prices: tuple[float | None, float | None] = (None, None)) -> None:
        self.worker = worker
        self.model = model
        self.prices = prices
        self.id = f"chatcmpl-{rid}"
        self.created = int(time.time())
        self.seq = 0
        self.assembler = Assembler()
        self.summary: StreamSummary | None = None
        self.began = time.monotonic()
        self.first_chunk: float | None = None

    cost = 0.0

    async def run(self, request: ChatRequest, timeout: float) -> AsyncIterator[StreamChunk | StreamEnd]:
        try:
            with deadlines.current().within(timeout):
                async for item in items(self.worker, request, self.model, timeout):
                    if isinstance(item, StreamSummary):
                        self.summary = item
                        continue
                    self.assembler.add(item)
                    first = self.seq == 0
                    if first:
                        self.first_chunk = time.monotonic() - self.began
                    yield StreamChunk(
                        seq=self.seq, index=item.index, role=item.role, content=item.content,
                        tool_calls=item.tool_calls, finish_reason=item.finish_reason,
                        id=self.id if first else None, model=self.model if first else None,
                        created=self.created if first else None,
                        provider=self.worker.name if first else None, item_json=item.item_json,
                        thinking=item.thinking, signature=item.signature,
                        redacted_thinking=item.redacted_thinking,
                        server_block=item.server_block, server_delta=item.server_delta,
                    )
                    self.seq += 1
        except TimeoutError as exc:  # the local (mock) adapter's stream; HTTP ones keep to it themselves
            raise DeadlineExceeded("the request deadline passed during the stream",
                                   where=self.worker.where) from exc
        usage = self.summary.usage if self.summary else None
        finish = self.summary.finish_reason if self.summary else None
        stop_sequence = self.summary.stop_sequence if self.summary else None
        self.cost = self.worker.account(self.model, usage or Usage(), 200, time.monotonic() - self.began,
                                        reported=self.summary.model if self.summary else "", prices=self.prices)
        yield StreamEnd(
            seq=self.seq, id=self.id, model=self.model, created=self.created, finish_reason=finish,
            usage=usage, provider=self.worker.name, target_model=self.model, cost_usd=self.cost,
            stop_sequence=stop_sequence,
        )

    def result(self) -> ChatResult:
        result = self.assembler.result(
            id=self.id, created=self.created, model=self.model,
            usage=self.summary.usage if self.summary else None,
            provider=self.worker.name, target_model=self.model,
        )
        return msgspec.structs.replace(result, cost_usd=self.cost, first_chunk_seconds=self.first_chunk,
                                       stop_sequence=self.summary.stop_sequence if self.summary else None)
