"""The `mock` provider: a deterministic answer derived from the prompt, with configurable latency and
failure. It is a provider like any other (routed, cached, counted), answered in-process instead of over
HTTP, so demos, tests and benchmarks need no network and no key.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator

from services.providers.base import Delta, StreamSummary, error_for_status
from services.providers.mock import embeddings
from services.providers.mock.settings import MockSettings
from shared.errors import GatewayError, ProviderError
from shared.messages import (
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingRequest,
    EmbeddingResult,
    ResponseMessage,
    Usage,
)


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: about four characters a token, at least one for non-empty text."""
    return (len(text) + 3) // 4


def reply_text(request: ChatRequest) -> str:
    last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    return f"Mock reply to: {last_user}" if last_user else "Mock reply."


def split(text: str, pieces: int) -> list[str]:
    """`text` in about `pieces` parts at word boundaries, joining back to exactly `text`."""
    words = text.split(" ")
    step = max(1, -(-len(words) // max(1, pieces)))
    parts = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    return [part + " " for part in parts[:-1]] + parts[-1:]


class MockAdapter:
    name = "mock"
    settings = MockSettings

    async def complete(self, request: ChatRequest, model: str, config: MockSettings) -> ChatResult:
        await self._begin(config)
        text, finish = self._answer(request)
        prompt_tokens = sum(count_tokens(m.text()) for m in request.messages)
        completion_tokens = count_tokens(text)
        n = request.n if isinstance(request.n, int) and request.n > 0 else 1
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        return ChatResult(
            id=f"chatcmpl-mock-{digest}",
            created=int(time.time()),
            model=model,
            choices=[
                Choice(index=i, message=ResponseMessage(content=text), finish_reason=finish) for i in range(n)
            ],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens * n,
                total_tokens=prompt_tokens + completion_tokens * n,
            ),
            provider=self.name,
            target_model=model,
        )

    async def stream(
        self, request: ChatRequest, model: str, config: MockSettings
    ) -> AsyncIterator[Delta | StreamSummary]:
        """The same answer as `complete`, in `stream_chunks` deltas `chunk_interval_ms` apart."""
        await self._begin(config)
        text, finish = self._answer(request)
        for i, piece in enumerate(split(text, config.stream_chunks)):
            if config.stream_fail_after is not None and i >= config.stream_fail_after:
                raise ProviderError("mock: simulated failure in the middle of a stream", where="provider:mock")
            if i and config.chunk_interval_ms > 0:
                await asyncio.sleep(config.chunk_interval_ms / 1000.0)
            yield Delta(role="assistant" if i == 0 else None, content=piece)
        yield Delta(finish_reason=finish)
        prompt_tokens = sum(count_tokens(m.text()) for m in request.messages)
        completion_tokens = count_tokens(text)
        yield StreamSummary(
            id=f"chatcmpl-mock-{hashlib.sha256(text.encode()).hexdigest()[:24]}",
            model=model,
            created=int(time.time()),
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    async def embed(self, request: EmbeddingRequest, model: str, config: MockSettings) -> EmbeddingResult:
        """Bag-of-words hashing vectors (`embeddings.py`): close for paraphrases, deterministic."""
        await self._begin(config)
        size = request.dimensions if isinstance(request.dimensions, int) else embeddings.DEFAULT_DIMENSIONS
        prompt_tokens = sum(embeddings.tokens(item) for item in request.input)
        return EmbeddingResult(
            model=model,
            vectors=[embeddings.packed(item, size) for item in request.input],
            usage=Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
            provider=self.name,
            target_model=model,
        )

    async def _begin(self, config: MockSettings) -> None:
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000.0)
        if config.fail_rate > 0 and random.random() < config.fail_rate:
            raise self.failure(config.fail_status)

    @staticmethod
    def _answer(request: ChatRequest) -> tuple[str, str]:
        text = reply_text(request)
        limit = request.max_output_tokens()
        if limit is not None and count_tokens(text) > limit:
            return text[: limit * 4], "length"
        return text, "stop"

    @staticmethod
    def failure(status: int) -> GatewayError:
        return error_for_status(status, "simulated failure", provider="mock", headers={})


adapter = MockAdapter()
