"""The mock upstream's embeddings speak each provider's format, refusals included: OpenAI's own SDK parses
its answers (floats and base64), and over-limit batches get the provider's 400 in the provider's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.mockupstream import embeddings as wire
from tests.mockupstream.server import MockUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    server = MockUpstream()
    await server.start()
    yield server
    await server.stop()


async def test_openais_sdk_reads_floats_and_base64(upstream: MockUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="k", max_retries=0) as client:
        floats = await client.embeddings.create(model="m", input=["a b", "c"], encoding_format="float")
        assert [d.embedding for d in floats.data] == [wire.vector("a b"), wire.vector("c")]
        assert floats.usage.prompt_tokens == 3
        decoded = await client.embeddings.create(model="m", input="a b", dimensions=4)  # the SDK asks base64
        assert list(decoded.data[0].embedding) == wire.vector("a b", 4)


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/v1/embeddings", {"model": "m", "input": []}, "'$.input' is invalid"),
    ("/model/cohere.embed-english-v3/invoke", {"texts": ["x"] * 97, "input_type": "search_document"},
     "expected maxItems: 96"),
    ("/v1beta/models/gemini-embedding-001:batchEmbedContents",
     {"requests": [{"content": {"parts": [{"text": "x"}]}}] * 101}, "at most 100 requests"),
])
async def test_over_limit_batches_are_the_providers_400(upstream: MockUpstream, path: str, body: object,
                                                        says: str) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400
    assert says in response.text


async def test_bedrocks_errors_carry_their_type(upstream: MockUpstream) -> None:
    upstream.script([{"status": 429}])
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        response = await client.post("/model/amazon.titan-embed-text-v2:0/invoke", json={"inputText": "x"})
    assert response.status_code == 429
    assert response.headers["x-amzn-errortype"].startswith("ThrottlingException")
    assert "message" in response.json()
