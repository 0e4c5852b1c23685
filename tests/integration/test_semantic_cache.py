"""The semantic cache through a real stack, as the official `openai` SDK sees it: a paraphrase above the
threshold is answered from the cache (`x-llm-edge-cache: hit-semantic`, the similarity beside it, no upstream
call), and nothing else is: a wording below the threshold, another tenant, temperature or tool list, a
conversation with tool turns, a `no-cache` request, a model that did not opt in. Embeddings come from the
mock provider (a bag-of-words hashing embedding); chat answers from the mock upstream, which counts calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from prometheus_client import REGISTRY

from services.cache.semantic import SemanticLookups
from tests.infra import Nats
from tests.integration.test_request_path import eventually, upstream_providers
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

ALPHA, BETA = "sk-alpha-0123456789", "sk-beta-0123456789"
QUESTION = "What is the capital city of France?"
PARAPHRASE = "Capital city of France?"  # cosine 0.866 with QUESTION under the mock embedding
OTHER = "What is the capital city of Germany?"  # cosine 0.75: below the threshold
THRESHOLD = 0.85
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def key(name: str, secret: str, tenant: str) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), "tenant": tenant}


def route(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "targets": [{"provider": "up", "model": "gpt-4o-mini"}], **fields}


SEMANTIC = {"embedding_model": "mock", "threshold": THRESHOLD, "volatile_tools": ["get_time"], "dimensions": 512}


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(
        nats_server.url,
        providers=upstream_providers(upstream),
        models=[route("smart", semantic_cache=SEMANTIC), route("exact")],
        keys=[key("alpha", ALPHA, "acme"), key("beta", BETA, "globex")],
        router={"retry": {"attempts": 1}},
    )
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def semantic(stack: Stack) -> SemanticLookups:
    lookups = stack.caches["cache"].semantic
    assert lookups is not None
    return lookups


async def ask(stack: Stack, content: str, *, api_key: str = ALPHA, model: str = "smart",
              headers: dict[str, str] | None = None, **params: Any) -> Any:
    client = stack.openai(api_key, default_headers=headers or {})
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **params)


async def stored(stack: Stack, content: str, **options: Any) -> None:
    """Ask once (a miss) and wait until every index holds the request."""
    before = len(semantic(stack).index)
    first = await ask(stack, content, **options)
    assert first.headers["x-llm-edge-cache"] == "miss"
    await eventually(lambda: len(semantic(stack).index) == before + 1)


def hits(tier: str) -> float:
    return REGISTRY.get_sample_value("llm_edge_cache_hits_total", {"tier": tier}) or 0.0


async def test_a_paraphrase_above_the_threshold_gets_the_earlier_answer(
        stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION)
    semantic_hits, exact_hits = hits("semantic"), hits("l1")

    raw = await ask(stack, PARAPHRASE)

    assert raw.headers["x-llm-edge-cache"] == "hit-semantic"
    similarity = float(raw.headers["x-llm-edge-cache-similarity"])
    assert THRESHOLD <= similarity < 1.0
    assert raw.parse().choices[0].message.content == f"Echo: {QUESTION}"  # the stored answer, not a new one
    assert raw.headers["x-llm-edge-cost-usd"] == "0.00000000"
    assert upstream.stats["calls"] == 1
    assert hits("semantic") == semantic_hits + 1
    assert hits("l1") == exact_hits  # counted apart from exact hits
    health = await stack.caches["cache"].health()
    assert health.checks["semantic_entries"] == "1"


async def test_a_wording_below_the_threshold_is_a_miss(stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION)
    raw = await ask(stack, OTHER)
    assert raw.headers["x-llm-edge-cache"] == "miss"
    assert "x-llm-edge-cache-similarity" not in raw.headers
    assert raw.parse().choices[0].message.content == f"Echo: {OTHER}"
    assert upstream.stats["calls"] == 2


async def test_another_tenant_temperature_or_tool_list_is_a_miss(stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION, temperature=0.2, tools=[WEATHER])
    assert (await ask(stack, PARAPHRASE, temperature=0.2, tools=[WEATHER])).headers["x-llm-edge-cache"] == \
        "hit-semantic"
    calls = upstream.stats["calls"]
    for raw in [
        await ask(stack, PARAPHRASE, api_key=BETA, temperature=0.2, tools=[WEATHER]),  # another tenant
        await ask(stack, PARAPHRASE, temperature=0.7, tools=[WEATHER]),  # another temperature
        await ask(stack, PARAPHRASE, temperature=0.2),  # no tools
        await ask(stack, PARAPHRASE, temperature=0.2, tools=[WEATHER, CLOCK]),  # another tool list
    ]:
        assert raw.headers["x-llm-edge-cache"] == "miss"
        assert raw.parse().choices[0].message.content == f"Echo: {PARAPHRASE}"
    assert upstream.stats["calls"] == calls + 4


async def test_a_model_without_semantic_cache_keeps_exact_only_behaviour(
        stack: Stack, upstream: MockUpstream) -> None:
    first = await ask(stack, QUESTION, model="exact")
    assert first.headers["x-llm-edge-cache"] == "miss"
    await eventually(lambda: len(stack.caches["cache"].l1) >= 1)
    assert (await ask(stack, PARAPHRASE, model="exact")).headers["x-llm-edge-cache"] == "miss"
    assert (await ask(stack, QUESTION, model="exact")).headers["x-llm-edge-cache"] == "hit-l1"
    assert upstream.stats["calls"] == 2
    assert len(semantic(stack).index) == 0


async def test_no_cache_never_gets_a_semantic_hit(stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION)
    raw = await ask(stack, PARAPHRASE, headers={"cache-control": "no-cache"})
    assert raw.headers["x-llm-edge-cache"] == "miss"
    assert raw.parse().choices[0].message.content == f"Echo: {PARAPHRASE}"
    assert upstream.stats["calls"] == 2


async def test_a_conversation_with_tool_turns_or_a_volatile_tool_never_gets_a_semantic_hit(
        stack: Stack, upstream: MockUpstream) -> None:
    volatile_first = await ask(stack, QUESTION, tools=[CLOCK])
    assert volatile_first.headers["x-llm-edge-cache"] == "miss"
    await eventually(lambda: len(stack.caches["cache"].l1) == 1)  # its answer is stored (exact cache)...
    assert len(semantic(stack).index) == 0  # ...but it was never embedded nor indexed
    await stored(stack, QUESTION)
    client = stack.openai(ALPHA)
    turns: list[Any] = [
        {"role": "user", "content": "Look it up"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": PARAPHRASE},
    ]
    with_tools = await client.chat.completions.with_raw_response.create(model="smart", messages=turns)
    assert with_tools.headers["x-llm-edge-cache"] == "miss"
    volatile = await ask(stack, PARAPHRASE, tools=[CLOCK])
    assert volatile.headers["x-llm-edge-cache"] == "miss"


async def test_a_semantic_hit_replays_as_a_stream(stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION)
    client = stack.openai(ALPHA)
    async with client.chat.completions.with_streaming_response.create(
            model="smart", messages=[{"role": "user", "content": PARAPHRASE}], stream=True) as response:
        assert response.headers["x-llm-edge-cache"] == "hit-semantic"
        assert float(response.headers["x-llm-edge-cache-similarity"]) >= THRESHOLD
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in await response.parse()
                        if chunk.choices])
    assert text == f"Echo: {QUESTION}"
    assert upstream.stats["calls"] == 1


async def test_a_streamed_miss_is_indexed_too(stack: Stack, upstream: MockUpstream) -> None:
    client = stack.openai(ALPHA)
    stream = await client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": QUESTION}], stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == f"Echo: {QUESTION}"
    await eventually(lambda: len(semantic(stack).index) == 1)
    raw = await ask(stack, PARAPHRASE)
    assert raw.headers["x-llm-edge-cache"] == "hit-semantic"


async def test_without_an_embedding_answer_the_request_still_succeeds(
        nats_server: Nats, upstream: MockUpstream) -> None:
    config = make_config(nats_server.url, providers=upstream_providers(upstream),
                         models=[route("smart", semantic_cache={**SEMANTIC, "embedding_model": "no-such-embedder"})])
    stack = await Stack(config).start()
    try:
        raw = await ask(stack, QUESTION, api_key="unused")
        assert raw.headers["x-llm-edge-cache"] == "miss"
        assert raw.parse().choices[0].message.content == f"Echo: {QUESTION}"
    finally:
        await stack.close()


def test_threshold_out_of_range_is_a_config_error(nats_server: Nats) -> None:
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=r"models\[0\]\.semantic_cache\.threshold"):
        make_config(nats_server.url, models=[
            {"name": "m", "targets": [{"provider": "mock", "model": "mock"}],
             "semantic_cache": {"embedding_model": "mock", "threshold": 1.5}}])



async def test_a_messages_api_request_never_gets_a_semantic_hit(stack: Stack, upstream: MockUpstream) -> None:
    await stored(stack, QUESTION)
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key=ALPHA, max_retries=0)
    raw = await client.messages.with_raw_response.create(
        model="smart", max_tokens=64, messages=[{"role": "user", "content": PARAPHRASE}])
    assert raw.headers["x-llm-edge-cache"] == "miss"
    message = await raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == f"Echo: {PARAPHRASE}"


async def test_every_cache_replica_indexes_what_one_of_them_embedded(stack: Stack, upstream: MockUpstream) -> None:
    second = await stack.start_cache("cache2")
    assert second.semantic is not None
    first = await ask(stack, QUESTION)
    assert first.headers["x-llm-edge-cache"] == "miss"
    await eventually(lambda: len(semantic(stack).index) == 1 and len(second.semantic.index) == 1)  # type: ignore[union-attr]
    await stack.stop_service("cache")  # only the second replica is left to answer
    raw = await ask(stack, PARAPHRASE)
    assert raw.headers["x-llm-edge-cache"] == "hit-semantic"
    assert raw.parse().choices[0].message.content == f"Echo: {QUESTION}"
    assert upstream.stats["calls"] == 1
