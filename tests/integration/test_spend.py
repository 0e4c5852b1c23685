"""Spend and usage at `/admin/spend`: after a scripted set of requests (the official `openai` SDK, plain and
streamed, two keys of two tenants, two models) on two ingress replicas, the totals per key, tenant and model
match the shipped pricing table (`shared/data/pricing.yaml`, read here on its own) to the cent and beyond;
cache hits cost nothing; and after every process stops and starts again (nats-server, Redis with
appendonly, cache, router, provider worker, both ingresses) the numbers are the same.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client import REGISTRY

from tests.infra import Nats, Server, infra
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

ADMIN = "sk-admin-spend-0123456789"
KEYS = {"alpha": "sk-alpha-spend-0123456789", "beta": "sk-beta-spend-0123456789"}
TENANTS = {"alpha": "red", "beta": "blue"}
MODELS = ("gpt-4o", "gpt-4o-mini")
PRICES = yaml.safe_load((Path(__file__).parents[2] / "shared" / "data" / "pricing.yaml").read_text())["models"]
MEASURES = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def expected_cost(model: str, prompt: int, completion: int) -> float:
    price = PRICES[model]
    return float(prompt * price["input"] + completion * price["output"]) / 1e6


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[tuple[Nats, Server]]:
    """A nats-server and a Redis with appendonly of this test's own: it stops and starts them."""
    nats, redis = infra().nats(), infra().redis(tmp_path, persistent=True)
    nats.start()
    redis.start()
    yield nats, redis
    redis.stop()
    nats.stop()


def config(nats_url: str, redis_url: str, upstream: MockUpstream, prefix: str) -> Any:
    return make_config(
        nats_url, prefix=prefix, admin={"key_sha256": sha(ADMIN)}, limits={"redis_url": redis_url},
        keys=[{"name": name, "sha256": sha(secret), "tenant": TENANTS[name]} for name, secret in KEYS.items()],
        providers={"up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "sk-up"}},
        models=[{"name": model, "targets": [{"provider": "up", "model": model}]} for model in MODELS],
    )


async def script(urls: list[str]) -> dict[tuple[str, str], list[float]]:
    """The requests: per key and model, (requests, prompt tokens, completion tokens, cost) as the pricing
    table prices the usage the client was told."""
    sent: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    plan = [("alpha", "gpt-4o", 3, 9000), ("alpha", "gpt-4o-mini", 2, 20000), ("beta", "gpt-4o", 1, 30000),
            ("beta", "gpt-4o-mini", 4, 5000)]
    n = 0
    for name, model, count, words in plan:
        for i in range(count):
            n += 1
            client = openai.AsyncOpenAI(base_url=f"{urls[n % 2]}/v1", api_key=KEYS[name], max_retries=0)
            prompt = f"request {n} " + "word " * words  # long prompts: costs in cents, not in micro-dollars
            messages: Any = [{"role": "user", "content": prompt}]
            if i == 0:  # the first of each kind streamed: a stream's end frame is charged like an answer
                stream = await client.chat.completions.create(
                    model=model, messages=messages, stream=True, stream_options={"include_usage": True})
                usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
                usage = usages[-1]
            else:
                answered = (await client.chat.completions.create(model=model, messages=messages)).usage
                assert answered is not None
                usage = answered
                # The same question again is a cache hit: answered, but no provider was paid for it.
                again = await client.chat.completions.with_raw_response.create(model=model, messages=messages)
                assert again.headers["x-llm-edge-cache"] != "miss"
            await client.close()
            counts = sent[name, model]
            counts[0] += 1
            counts[1] += usage.prompt_tokens
            counts[2] += usage.completion_tokens
            counts[3] += expected_cost(model, usage.prompt_tokens, usage.completion_tokens)
    return sent


def summed(sent: dict[tuple[str, str], list[float]], by: tuple[str, ...]) -> dict[tuple[str, ...], list[float]]:
    out: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for (name, model), counts in sent.items():
        group = {"key": name, "tenant": TENANTS[name], "model": model}
        for i, value in enumerate(counts):
            out[tuple(group[d] for d in by)][i] += value
    return out


async def report(url: str, group_by: str, **query: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN}"}) as admin:
        answer = await admin.get("/admin/spend", params={"group_by": group_by, **query})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def rows(body: dict[str, Any], by: tuple[str, ...]) -> dict[tuple[str, ...], list[float]]:
    return {tuple(row[d] for d in by): [row[m] for m in MEASURES] for row in body["data"]}


def assert_matches(got: dict[tuple[str, ...], list[float]], want: dict[tuple[str, ...], list[float]]) -> None:
    assert set(got) == set(want)
    for group, counts in want.items():
        assert got[group][:3] == counts[:3], group
        assert round(got[group][3], 2) == round(counts[3], 2), group  # to the cent...
        assert got[group][3] == pytest.approx(counts[3], abs=1e-8), group  # ...and to the hundred-millionth


def spend_metric(name: str, model: str) -> float:
    labels = {"key": name, "tenant": TENANTS[name], "model": model}
    return REGISTRY.get_sample_value("llm_edge_spend_usd_total", labels) or 0.0


async def test_spend_matches_the_pricing_table_and_survives_every_restart(
    own_servers: tuple[Nats, Server], upstream: MockUpstream
) -> None:
    nats, redis = own_servers
    prefix = f"spend{time.monotonic_ns()}"
    metric_before = {(k, m): spend_metric(k, m) for k in KEYS for m in MODELS}
    stack = await Stack(config(nats.url, redis.url, upstream, prefix)).start()
    try:
        urls = [stack.url, await stack.add_ingress()]
        sent = await script(urls)
        await stack.settle()
        before: dict[str, dict[str, Any]] = {}
        for by in (("key",), ("tenant",), ("model",), ("key", "model")):
            body = await report(urls[len(by) % 2], ",".join(by), period="today")
            assert body["durable"] is True
            assert_matches(rows(body, by), summed(sent, by))
            before[",".join(by)] = body
        total = sum(counts[3] for counts in sent.values())
        assert before["key"]["total"]["cost_usd"] == pytest.approx(total, abs=1e-8)
        assert total > 0.1  # the script spends real money (about 15 cents): a cent is a meaningful unit
        for (name, model), counts in sent.items():  # Prometheus has the same, by key, tenant and model
            assert spend_metric(name, model) - metric_before[name, model] == pytest.approx(counts[3], abs=1e-8)
        hour = int(time.time()) // 3600 * 3600
        custom = await report(urls[0], "key", **{"from": str(hour - 3600), "to": str(hour + 3600)})
        if int(time.time()) // 3600 * 3600 == hour:  # (the clock did not cross an hour meanwhile)
            assert rows(custom, ("key",)) == rows(before["key"], ("key",))
    finally:
        await stack.close()

    # Every process goes: the gateway's services, both ingresses, nats-server, and Redis (appendonly).
    redis.stop()
    nats.stop()
    nats.start()
    redis.start()
    stack = await Stack(config(nats.url, redis.url, upstream, prefix)).start()
    try:
        for grouping, body in before.items():
            again = await report(stack.url, grouping, period="today")
            assert again["data"] == body["data"] and again["total"] == body["total"], grouping
    finally:
        await stack.close()


async def test_without_redis_spend_is_this_process_own_and_says_so(nats_server: Nats, upstream: MockUpstream) -> None:
    stack = await Stack(make_config(nats_server.url, admin={"key_sha256": sha(ADMIN)},
                                    keys=[{"name": "alpha", "sha256": sha(KEYS["alpha"]), "tenant": "red"}])).start()
    try:
        client = stack.openai(KEYS["alpha"])
        completion = await client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
        assert completion.usage is not None
        body = await report(stack.url, "key,model", period="month")
        assert body["durable"] is False
        [row] = body["data"]
        assert (row["key"], row["model"], row["requests"]) == ("alpha", "mock", 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (completion.usage.prompt_tokens,
                                                                    completion.usage.completion_tokens)
    finally:
        await stack.close()


@pytest.mark.parametrize(("query", "param"), [
    ({"group_by": "colour"}, "group_by"), ({"group_by": "key,key"}, "group_by"), ({"period": "decade"}, "period"),
    ({"from": "yesterday", "to": "2026-01-01"}, "from"), ({"from": "2026-02-01", "to": "2026-01-01"}, "to"),
    ({"from": "2026-01-01"}, "period"), ({"from": "2000-01-01T05:00:00Z", "to": "2000-01-02"}, "from"),
    ({"from": "99999999999999999999", "to": "99999999999999999999"}, "from"),
    ({"from": "1969-12-31", "to": "1970-01-02"}, "from"),
])
async def test_a_bad_spend_query_is_a_400(nats_server: Nats, redis_url: str, query: dict[str, str],
                                          param: str) -> None:
    stack = await Stack(make_config(nats_server.url, admin={"key_sha256": sha(ADMIN)},
                                    limits={"redis_url": redis_url})).start()
    try:
        answer = await stack.http.get("/admin/spend", params=query, headers={"authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param
    finally:
        await stack.close()
