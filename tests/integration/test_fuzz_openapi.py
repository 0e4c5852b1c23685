"""Schemathesis against the gateway's own OpenAPI document (`/openapi.json`), through a real stack (nats,
cache, router, workers) with the mock provider and mock OpenAI and Anthropic upstreams: bodies valid by
the schema and bodies that break it, for chat completions, Messages, token counts and the Responses API.
No answer may be a server error, and the gateway must still be healthy and answering afterwards.

The budget is fixed and small (`EXAMPLES` per operation and mode) so that the suite stays fast; a failure
prints the case that found it, and Hypothesis' seed to replay it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema
from schemathesis.checks import not_a_server_error

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

OPERATIONS = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/responses"),
]
EXAMPLES = 8
# A generated `model` is almost never one the gateway serves: half the valid bodies are given one that it
# does (built-in mock, an OpenAI-format and an Anthropic upstream), so that they reach a worker.
MODELS = ["mock", "up/gpt-4o-mini", "claude/claude-sonnet-4-5"]


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    upstream = MockUpstream()
    await upstream.start()
    providers = {
        "mock": {},
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "k"},
    }
    stack = await Stack(make_config(nats_server.url, providers=providers,
                                    ingress={"request_timeout_seconds": 20})).start()
    yield stack
    await stack.close()
    await upstream.stop()


@pytest.fixture(scope="module")
async def schema(stack: Stack) -> BaseSchema:
    """The document the gateway serves, as Schemathesis reads it (once for the module)."""
    return await asyncio.to_thread(schemathesis.openapi.from_url, f"{stack.url}/openapi.json")


def fuzz(schema: BaseSchema, url: str, method: str, path: str, mode: schemathesis.GenerationMode) -> None:
    """Schemathesis' cases for one operation, each sent to the gateway (blocking: run in a thread)."""
    operation = schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode), model=st.sampled_from([None, *MODELS]))
    def one(case: schemathesis.Case[Any], model: str | None) -> None:
        if model is not None and mode is schemathesis.GenerationMode.POSITIVE and isinstance(case.body, dict):
            body: dict[str, Any] = case.body
            body["model"] = model
        response = case.call(base_url=url, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])

    one()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[path for _, path in OPERATIONS])
async def test_no_server_error_and_still_healthy(
    stack: Stack, schema: BaseSchema, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    await asyncio.to_thread(fuzz, schema, stack.url, method, path, mode)
    ready = await stack.http.get("/health/ready")
    assert ready.status_code == 200
    answer = await stack.http.post("/v1/chat/completions", headers={"cache-control": "no-cache, no-store"},
                                   json={"model": "mock", "messages": [{"role": "user", "content": "still there?"}]})
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
