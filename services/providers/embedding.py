"""The provider worker's embeddings: `llm.provider.<name>.embed`, an `EmbeddingRequest` in, an
`EmbeddingResult` out.

A request larger than the provider's batch limit (Titan takes one text a call, Cohere 96, OpenAI 2048) is
split into batches sent at once (bounded), and the vectors are joined back in input order; the first
failing batch fails the request (the router may retry or fall back, and the cache keeps nothing partial).
Metrics, the cost (input tokens at the model's price) and the span are the same as a chat call's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import msgspec

from services.providers.base import EmbeddingAdapter, HttpAdapter, LocalEmbedder
from shared import bus
from shared.errors import GatewayError, InvalidRequest, ProviderError
from shared.logs import request_id
from shared.messages import EmbeddingRequest, EmbeddingResult, Usage
from shared.subjects import Headers

if TYPE_CHECKING:
    from services.providers.worker import ProviderWorker

# Upstream calls of one split request in flight at once: enough to hide latency, few enough not to
# exhaust a provider's per-second limit with one client's batch.
PARALLEL_BATCHES = 8


def batches(count: int, limit: int) -> list[range]:
    """Index ranges of at most `limit` inputs covering `0..count` in order."""
    limit = max(1, limit)
    return [range(start, min(start + limit, count)) for start in range(0, count, limit)]


class Embedder:
    """The worker's `embed` endpoint (the worker owns the HTTP client, metrics and redaction)."""

    def __init__(self, worker: ProviderWorker) -> None:
        self.worker = worker
        adapter = worker.adapter
        self.local = isinstance(adapter, LocalEmbedder)
        self.http = None if self.local else adapter if isinstance(adapter, EmbeddingAdapter) else None

    @property
    def supported(self) -> bool:
        return self.local or self.http is not None

    async def embed(self, request: EmbeddingRequest, ctx: bus.Context) -> EmbeddingResult:
        worker = self.worker
        request_id.set(ctx.request_id)
        timeout = worker.time_left(ctx)
        model = ctx.headers.get(Headers.TARGET_MODEL) or request.model
        return await worker.metered("embeddings", model, ctx, lambda: self._embed(request, model, timeout))

    async def _embed(self, request: EmbeddingRequest, model: str, timeout: float) -> EmbeddingResult:
        if self.local:
            adapter = cast(LocalEmbedder[Any], self.worker.adapter)
            return await adapter.embed(request, model, self.worker.settings)
        if self.http is None:
            raise InvalidRequest(f"{self.worker.name}: this provider does not make embeddings.", param="model",
                                 code="embeddings_unsupported", where=self.worker.where)
        parts = batches(len(request.input), self.http.embed_batch_limit(model))
        if len(parts) == 1:
            return await self._call(request, model, timeout)
        gate = asyncio.Semaphore(PARALLEL_BATCHES)

        async def one(part: range) -> EmbeddingResult:
            async with gate:
                piece = msgspec.structs.replace(request, input=request.input[part.start:part.stop])
                return await self._call(piece, model, timeout)

        results = await _all(one(part) for part in parts)
        tokens = sum(r.usage.prompt_tokens for r in results)
        return EmbeddingResult(
            model=results[0].model, vectors=[v for r in results for v in r.vectors],
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens), provider=self.worker.name, target_model=model)

    async def _call(self, request: EmbeddingRequest, model: str, timeout: float) -> EmbeddingResult:
        assert self.http is not None
        worker, adapter = self.worker, self.http
        call = await worker.authorized(adapter.build_embed_request(request, model, worker.settings), timeout)
        try:
            response = await worker.upstream.send(call, timeout)
            if response.status >= 400:
                raise cast(HttpAdapter[Any], adapter).parse_error(
                    response.status, response.body, response.headers, provider=worker.name)
            try:
                result = adapter.parse_embed_response(response.body, response.headers, provider=worker.name,
                                                      model=model, inputs=len(request.input))
            except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
                raise ProviderError(f"{worker.name}: malformed embeddings response", code="provider_bad_response",
                                    where=worker.where) from exc
        except GatewayError as exc:
            worker.redacted(exc, call)
            raise
        if len(result.vectors) != len(request.input):
            raise ProviderError(f"{worker.name}: {len(result.vectors)} vectors for {len(request.input)} inputs",
                                code="provider_bad_response", where=worker.where)
        if result.usage.prompt_tokens == 0:  # Gemini's answers count nothing: estimated, so limits still count
            tokens = estimated_tokens(request)
            result = msgspec.structs.replace(result, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
        return result


def estimated_tokens(request: EmbeddingRequest) -> int:
    """About four characters a token (the providers' own rule of thumb); a token array's own length."""
    return sum(len(item) if isinstance(item, list) else max(1, (len(item) + 3) // 4) for item in request.input)


async def _all(calls: Any) -> list[EmbeddingResult]:
    """Every batch's result in order; on the first failure the others are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
