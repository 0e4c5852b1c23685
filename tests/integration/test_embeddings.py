"""`POST /v1/embeddings` through the whole gateway: the official `openai` SDK against the ingress, each
provider's worker calling the mock upstream in that provider's embeddings wire format. What the client sees
(vectors in input order, as floats or base64, usage, errors) and what the provider saw (URL, auth, body),
the per-input cache (a repeated batch calls nobody; only new inputs go upstream), and batch splitting.
"""

from __future__ import annotations

import asyncio
import base64
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.infra import Nats
from tests.mockupstream import embeddings as wire
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

TEXTS = ["The food was delicious and the waiter...", "NATS is a message bus", "Embeddings are vectors"]


def float32(values: list[float]) -> list[float]:
    """What a vector is after the gateway stored it as float32 (the mock's values are exact in float32)."""
    return array("f", values).tolist()


def expected(items: list[str], dimensions: int = wire.DEFAULT_DIMENSIONS) -> list[list[float]]:
    return [float32(wire.vector(item, dimensions)) for item in items]


def decoded(b64: str) -> list[float]:
    values = array("f")
    values.frombytes(base64.b64decode(b64))
    return values.tolist()


async def eventually(check: Any, timeout: float = 3.0) -> None:
    """Wait for what the gateway reaches asynchronously (the cache fill broadcast), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Case:
    provider: dict[str, Any]  # `{url}` stands for the mock upstream's address
    model: str
    path: str  # where the provider must be called (the first call, when split)
    auth: tuple[str, str]  # header (lower case) and how its value starts
    text_at: str  # where the first input's text sits in the body the provider received
    batch: int = 2048  # inputs per upstream call

    def config(self, url: str) -> dict[str, Any]:
        return {k: v.replace("{url}", url) if isinstance(v, str) else v for k, v in self.provider.items()}


CASES = {
    "openai": Case({"adapter": "openai", "base_url": "{url}/v1", "api_key": "sk-openai"}, "text-embedding-3-small",
                   "/v1/embeddings", ("authorization", "Bearer sk-openai"), "input.0"),
    "openai-compatible": Case({"adapter": "openai_compatible", "base_url": "{url}/v1"}, "bge-small",
                              "/v1/embeddings", ("content-type", "application/json"), "input.0"),
    "azure": Case({"adapter": "azure", "base_url": "{url}", "api_key": "azure-key"}, "prod-embed",
                  "/openai/deployments/prod-embed/embeddings?api-version=2024-10-21", ("api-key", "azure-key"),
                  "input.0"),
    "azure-v1": Case({"adapter": "azure", "base_url": "{url}", "api_key": "azure-key", "api_version": "v1"},
                     "prod-embed", "/openai/v1/embeddings", ("api-key", "azure-key"), "input.0"),
    "gemini": Case({"adapter": "gemini", "base_url": "{url}", "api_key": "gemini-key"}, "gemini-embedding-001",
                   "/v1beta/models/gemini-embedding-001:batchEmbedContents", ("x-goog-api-key", "gemini-key"),
                   "requests.0.content.parts.0.text", batch=100),
    "bedrock-titan": Case({"adapter": "bedrock", "base_url": "{url}", "api_key": "br-key"},
                          "amazon.titan-embed-text-v2:0", "/model/amazon.titan-embed-text-v2:0/invoke",
                          ("authorization", "Bearer br-key"), "inputText", batch=1),
    "bedrock-cohere": Case({"adapter": "bedrock", "base_url": "{url}", "region": "us-east-1",
                            "aws_access_key_id": "AKIDEXAMPLE",
                            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                           "cohere.embed-english-v3", "/model/cohere.embed-english-v3/invoke",
                           ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "texts.0", batch=96),
}


def dig(body: Any, path: str) -> Any:
    for key in path.split("."):
        body = body[int(key)] if isinstance(body, list) else body[key]
    return body


async def start(nats: Nats, upstream: MockUpstream, case: Case, **fields: Any) -> Stack:
    config = make_config(
        nats.url,
        providers={"cloud": case.config(upstream.url), "mock": {}},
        models=[{"name": "embed", "targets": [{"provider": "cloud", "model": case.model}]}],
        router={"retry": {"attempts": 1}},
        **fields,
    )
    return await Stack(config).start()


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream, case: Case) -> AsyncIterator[Stack]:
    stack = await start(nats_server, upstream, case)
    yield stack
    await stack.close()


async def test_sdk_gets_vectors_as_floats_and_base64(stack: Stack, upstream: MockUpstream, case: Case) -> None:
    client = stack.openai()
    got = await client.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    assert [d.index for d in got.data] == [0, 1, 2]
    assert [d.embedding for d in got.data] == expected(TEXTS)
    assert got.model == case.model
    assert got.usage.prompt_tokens > 0 and got.usage.total_tokens == got.usage.prompt_tokens

    calls = upstream.requests
    assert len(calls) == -(-len(TEXTS) // case.batch)
    name, value = case.auth
    for call in calls:  # split calls run at once: any may arrive first
        assert call["url"] == case.path
        assert call["headers"][name].startswith(value)
    assert TEXTS[0] in [dig(call["body"], case.text_at) for call in calls]
    for call in calls:
        assert "sk-" not in str(call["body"])  # the key travels in a header only

    # base64 of the same vectors (little-endian float32): asked anew (`no-cache`), then from the cache.
    fresh = await client.embeddings.create(model="embed", input=TEXTS, encoding_format="base64",
                                           extra_headers={"cache-control": "no-cache"})
    assert [decoded(d.embedding) for d in fresh.data] == expected(TEXTS)  # type: ignore[arg-type]
    assert len(upstream.requests) == 2 * len(calls)


async def test_sdk_default_encoding_is_decoded_by_the_sdk(stack: Stack) -> None:
    """The SDK asks for base64 when the caller names no encoding, and decodes it itself."""
    got = await stack.openai().embeddings.create(model="embed", input="NATS is a message bus")
    assert [list(d.embedding) for d in got.data] == expected(["NATS is a message bus"])


async def test_openai_embeddings_are_priced(nats_server: Nats, upstream: MockUpstream) -> None:
    stack = await start(nats_server, upstream, CASES["openai"])
    try:
        got = await stack.openai().embeddings.with_raw_response.create(model="embed", input=TEXTS,
                                                                       encoding_format="float")
        tokens = got.parse().usage.prompt_tokens
        assert float(got.headers["x-llm-edge-cost-usd"]) == pytest.approx(tokens * 0.02 / 1e6)  # $0.02 per 1M
    finally:
        await stack.close()


# --- the per-input cache ---------------------------------------------------------------------------------------

OPENAI = CASES["openai-compatible"]


@pytest.fixture
async def compatible(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    stack = await start(nats_server, upstream, OPENAI)
    yield stack
    await stack.close()


def l1_holds(stack: Stack, count: int) -> Any:
    l1 = stack.apps[0].gateway.l1
    assert l1 is not None
    return lambda: len(l1) >= count


async def test_a_repeated_batch_makes_no_upstream_call(compatible: Stack, upstream: MockUpstream) -> None:
    client = compatible.openai()
    batch = [f"document number {i}" for i in range(5)]
    first = await client.embeddings.with_raw_response.create(model="embed", input=batch, encoding_format="float")
    assert first.headers["x-llm-edge-cache"] == "miss"
    await eventually(l1_holds(compatible, 5))
    again = await client.embeddings.with_raw_response.create(model="embed", input=batch, encoding_format="base64")
    assert len(upstream.requests) == 1
    assert again.headers["x-llm-edge-cache"] == "hit-l1"
    assert again.headers["x-llm-edge-cached-inputs"] == "5"
    parsed = again.parse()
    assert [decoded(d.embedding) for d in parsed.data] == expected(batch)  # type: ignore[arg-type]
    assert parsed.usage.prompt_tokens == 0  # nothing was charged for


async def test_only_new_inputs_go_upstream_and_come_back_in_order(compatible: Stack, upstream: MockUpstream) -> None:
    client = compatible.openai()
    seen = ["alpha one", "beta two", "gamma three"]
    await client.embeddings.create(model="embed", input=seen, encoding_format="float")
    await eventually(l1_holds(compatible, 3))
    upstream.reset()
    batch = ["alpha one", "delta four", "beta two", "epsilon five", "gamma three"]
    got = await client.embeddings.with_raw_response.create(model="embed", input=batch, encoding_format="float")
    assert [call["body"]["input"] for call in upstream.requests] == [["delta four", "epsilon five"]]
    assert got.headers["x-llm-edge-cache"] == "partial"
    assert [d.embedding for d in got.parse().data] == expected(batch)


async def test_the_cache_key_holds_the_dimensions(compatible: Stack, upstream: MockUpstream) -> None:
    client = compatible.openai()
    await client.embeddings.create(model="embed", input="same text", encoding_format="float")
    await eventually(l1_holds(compatible, 1))
    got = await client.embeddings.create(model="embed", input="same text", dimensions=4, encoding_format="float")
    assert len(upstream.requests) == 2 and upstream.requests[1]["body"]["dimensions"] == 4
    assert [d.embedding for d in got.data] == expected(["same text"], 4)


async def test_tenants_never_share_vectors(nats_server: Nats, upstream: MockUpstream) -> None:
    import hashlib

    keys = [{"name": name, "sha256": hashlib.sha256(f"sk-{name}".encode()).hexdigest()} for name in ("a", "b")]
    stack = await start(nats_server, upstream, OPENAI, keys=keys)
    try:
        await stack.openai("sk-a").embeddings.create(model="embed", input="private text", encoding_format="float")
        await eventually(l1_holds(stack, 1))
        got = await stack.openai("sk-b").embeddings.with_raw_response.create(
            model="embed", input="private text", encoding_format="float")
        assert got.headers["x-llm-edge-cache"] == "miss"
        assert len(upstream.requests) == 2
    finally:
        await stack.close()


# --- batch splitting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bedrock-cohere", "gemini", "bedrock-titan"])
async def test_a_batch_over_the_provider_limit_is_split_and_reassembled(
    nats_server: Nats, upstream: MockUpstream, name: str
) -> None:
    case = CASES[name]
    count = {"bedrock-cohere": 200, "gemini": 150, "bedrock-titan": 5}[name]
    stack = await start(nats_server, upstream, case)
    try:
        batch = [f"passage {i} about topic {i % 7}" for i in range(count)]
        got = await stack.openai().embeddings.create(model="embed", input=batch, encoding_format="float")
        assert [d.index for d in got.data] == list(range(count))
        assert [d.embedding for d in got.data] == expected(batch)
        items_at = {"bedrock-cohere": "texts", "gemini": "requests"}.get(name)
        sizes = [len(dig(call["body"], items_at)) if items_at else 1 for call in upstream.requests]
        assert sum(sizes) == count and max(sizes) <= case.batch
        assert len(sizes) == -(-count // case.batch)
    finally:
        await stack.close()


# --- the mock provider (in-process) -------------------------------------------------------------------------


async def test_the_mock_provider_embeds_paraphrases_close(nats_server: Nats) -> None:
    stack = await Stack(make_config(nats_server.url)).start()
    try:
        got = await stack.openai().embeddings.create(
            model="mock-embedding", encoding_format="float",
            input=["What is the capital of France?", "what's the capital of france", "How do I bake bread?"])
        a, b, c = (d.embedding for d in got.data)

        def cosine(x: list[float], y: list[float]) -> float:
            return sum(p * q for p, q in zip(x, y, strict=True))  # the mock's vectors are unit length

        assert cosine(a, b) > 0.8 > 0.3 > cosine(a, c)
        assert len(a) == 256
    finally:
        await stack.close()


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "embed", "input": []}, "input"),
    ({"model": "embed", "input": ["ok", ""]}, "input[1]"),
    ({"model": "embed", "input": ""}, "input"),
    ({"model": "embed", "input": ["text", 42]}, "input"),
    ({"model": "embed", "input": [[1, 2], []]}, "input[1]"),
    ({"model": "embed", "input": "x", "encoding_format": "binary"}, "encoding_format"),
    ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x"}, "model"),
    ({"model": "embed", "input": ["x"] * 2049}, "input"),
])
async def test_bad_input_is_a_400_naming_the_field(compatible: Stack, upstream: MockUpstream,
                                                    body: dict[str, Any], param: str) -> None:
    response = await compatible.http.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert upstream.requests == []


async def test_an_unknown_model_is_openais_404(compatible: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await compatible.openai().embeddings.create(model="no-such-model", input="x")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


async def test_token_arrays_reach_an_openai_upstream(compatible: Stack, upstream: MockUpstream) -> None:
    got = await compatible.openai().embeddings.create(model="embed", input=[[1212, 318], [257, 1332, 13]],
                                                      encoding_format="float")
    assert upstream.requests[0]["body"]["input"] == [[1212, 318], [257, 1332, 13]]
    assert [d.embedding for d in got.data] == [float32(wire.vector([1212, 318])),
                                              float32(wire.vector([257, 1332, 13]))]


async def test_token_arrays_to_a_text_only_provider_are_a_400(nats_server: Nats, upstream: MockUpstream) -> None:
    stack = await start(nats_server, upstream, CASES["gemini"])
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            await stack.openai().embeddings.create(model="embed", input=[1212, 318])
        assert caught.value.response.json()["error"]["param"] == "input[0]"
        assert upstream.requests == []
    finally:
        await stack.close()


@pytest.mark.parametrize("name", ["openai", "gemini", "bedrock-titan"])
async def test_provider_errors_reach_the_client_in_openais_shape(
    nats_server: Nats, upstream: MockUpstream, name: str
) -> None:
    stack = await start(nats_server, upstream, CASES[name])
    try:
        upstream.script([{"status": 429, "headers": {"retry-after": "7"}}])
        with pytest.raises(openai.RateLimitError) as caught:
            await stack.openai().embeddings.create(model="embed", input="x")
        assert caught.value.response.headers["retry-after"] == "7"
        upstream.script([{"status": 500}])
        with pytest.raises(openai.InternalServerError) as failed:
            await stack.openai().embeddings.create(model="embed", input="x")
        assert failed.value.status_code == 502
        assert failed.value.response.json()["error"]["code"] == "provider_error"
    finally:
        await stack.close()


async def test_a_failing_target_falls_back_to_the_next(nats_server: Nats, upstream: MockUpstream) -> None:
    config = make_config(
        nats_server.url,
        providers={"cloud": OPENAI.config(upstream.url), "mock": {}},
        models=[{"name": "embed", "targets": [{"provider": "cloud", "model": "bge-small"},
                                              {"provider": "mock", "model": "mock-embedding"}]}],
        router={"retry": {"attempts": 1}},
    )
    stack = await Stack(config).start()
    try:
        upstream.script([{"status": 503}])
        got = await stack.openai().embeddings.with_raw_response.create(model="embed", input="x",
                                                                       encoding_format="float")
        assert got.headers["x-llm-edge-provider"] == "mock"
        assert len(got.parse().data[0].embedding) == 256
    finally:
        await stack.close()


# --- GET /v1/models/{id} -----------------------------------------------------------------------------------


async def test_models_retrieve(compatible: Stack) -> None:
    client = compatible.openai()
    model = await client.models.retrieve("embed")
    assert model.id == "embed" and model.object == "model"
    assert (await client.models.retrieve("cloud/other-model")).owned_by == "cloud"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("no-such-model")
    assert caught.value.response.json()["error"] == {
        "message": "The model `no-such-model` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


# --- keys and limits ------------------------------------------------------------------------------------------


async def test_keys_models_and_token_limits_apply_to_embeddings(nats_server: Nats) -> None:
    import hashlib

    alpha = {"name": "alpha", "sha256": hashlib.sha256(b"sk-alpha").hexdigest(), "tpm": 30,
             "models": ["mock-embedding"]}
    stack = await Stack(make_config(nats_server.url, keys=[alpha], limits={"window_seconds": 3600})).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            await stack.openai("sk-wrong").embeddings.create(model="mock-embedding", input="x")
        client = stack.openai("sk-alpha")
        with pytest.raises(openai.PermissionDeniedError):
            await client.embeddings.create(model="mock-other", input="x")
        first = await client.embeddings.with_raw_response.create(model="mock-embedding", input="word " * 40)
        assert first.parse().usage.prompt_tokens > 30  # charged after the answer
        await stack.settle()
        with pytest.raises(openai.RateLimitError) as caught:
            await client.embeddings.create(model="mock-embedding", input="more")
        assert caught.value.response.json()["error"]["type"] == "tokens"
    finally:
        await stack.close()
