"""The `mock` provider: a deterministic answer derived from the prompt, with configurable latency and
failure. It is a provider like any other (routed, cached, counted), answered in-process instead of over
HTTP, so demos, tests and benchmarks need no network and no key.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

from services.providers.base import error_for_status
from shared.config import ProviderConfig
from shared.errors import GatewayError
from shared.messages import ChatRequest, ChatResult, Choice, ResponseMessage, Usage


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: about four characters a token, at least one for non-empty text."""
    return (len(text) + 3) // 4


def reply_text(request: ChatRequest) -> str:
    last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    return f"Mock reply to: {last_user}" if last_user else "Mock reply."


class MockAdapter:
    name = "mock"

    async def complete(self, request: ChatRequest, model: str, config: ProviderConfig) -> ChatResult:
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000.0)
        if config.fail_rate > 0 and random.random() < config.fail_rate:
            raise self.failure(config.fail_status)
        text = reply_text(request)
        limit = request.max_output_tokens()
        finish = "stop"
        if limit is not None and count_tokens(text) > limit:
            text, finish = text[: limit * 4], "length"
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

    @staticmethod
    def failure(status: int) -> GatewayError:
        return error_for_status(status, "simulated failure", provider="mock", headers={})


adapter = MockAdapter()
