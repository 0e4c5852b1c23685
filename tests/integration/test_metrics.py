"""Metrics after real traffic: a miss, a hit and an error show up with the labels an operator needs.

The in-process stack shares one registry; `tests/e2e` scrapes each process of `llm-edge up` separately.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from shared import bus, runtime
from tests.infra import Nats, Server
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_miss_hit_and_error_are_counted(nats_server: Nats, upstream: MockUpstream) -> None:
    config = make_config(nats_server.url, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}},
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    body = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "count me please"}]}
    before = {
        "miss": value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="200", origin="gateway",
                      cache="miss"),
        "hit": value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="200", origin="gateway",
                     cache="hit-l1"),
        "err": value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="429", origin="provider",
                     cache="miss"),
        "cost": value("llm_edge_cost_usd_total", provider="up", model="gpt-4o-mini"),
        "l1_hit": value("llm_edge_cache_lookups_total", tier="l1", result="hit"),
        "hits": value("llm_edge_cache_hits_total", tier="l1"),
        "misses": value("llm_edge_cache_misses_total", tier="l1"),
        "out": value("llm_edge_tokens_total", provider="up", model="gpt-4o-mini", type="output"),
    }
    try:
        miss = await stack.http.post("/v1/chat/completions", json=body)
        await eventually(lambda: len(stack.caches["cache"].l1) == 1)
        hit = await stack.http.post("/v1/chat/completions", json=body)
        upstream.script([{"status": 429}])
        error = await stack.http.post("/v1/chat/completions", json={**body, "seed": 1})
        assert (miss.status_code, hit.status_code, error.status_code) == (200, 200, 429)

        usage = miss.json()["usage"]
        expected_cost = usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.60e-6
        assert float(miss.headers["x-llm-edge-cost-usd"]) == round(expected_cost, 8)
        assert value("llm_edge_cost_usd_total", provider="up", model="gpt-4o-mini") - before["cost"] == \
            pytest.approx(expected_cost)
        assert value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="200", origin="gateway",
                     cache="miss") - before["miss"] == 1
        assert value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="200", origin="gateway",
                     cache="hit-l1") - before["hit"] == 1
        assert value("llm_edge_requests_total", provider="up", model="up/gpt-4o-mini", status="429", origin="provider",
                     cache="miss") - before["err"] == 1
        assert value("llm_edge_cache_lookups_total", tier="l1", result="hit") - before["l1_hit"] == 1
        # The seed's names: hits and misses by tier, provider availability.
        assert value("llm_edge_cache_hits_total", tier="l1") - before["hits"] == 1
        assert value("llm_edge_cache_misses_total", tier="l1") - before["misses"] >= 1
        assert value("llm_edge_provider_available", provider="up") == 0  # its last call was the 429
        assert value("llm_edge_tokens_total", provider="up", model="gpt-4o-mini", type="output") - \
            before["out"] == usage["completion_tokens"]
        assert value("llm_edge_provider_requests_total", provider="up", model="gpt-4o-mini", status="429") >= 1
        assert value("llm_edge_gateway_overhead_seconds_count", cache="miss") >= 1
        scraped = (await stack.http.get("/metrics")).text
        assert "llm_edge_request_duration_seconds_bucket" in scraped
        assert f'llm_edge_bus_request_duration_seconds_count{{subject="{config.prefix}.route"}}' in scraped
    finally:
        await stack.close()


async def test_a_worker_is_ready_while_on_the_bus_and_not_draining(nats_server: Nats) -> None:
    """What /health/ready on a worker's metrics port answers (the probe server itself: tests/unit)."""
    nc = await bus.connect(nats_server.url, "readiness-test")
    stop = asyncio.Event()
    ready = runtime.taking_work(nc, stop)
    assert ready()
    stop.set()  # SIGTERM: draining
    assert not ready()
    stop.clear()
    await nc.close()  # the bus is gone
    assert not ready()


async def test_enable_metrics_false_hides_metrics_and_enable_l2_false_skips_redis(
    nats_server: Nats, redis_server: Server
) -> None:
    stack = await Stack(make_config(nats_server.url, metrics_enabled=False,
                                    cache={"redis_url": redis_server.url, "l2_enabled": False})).start()
    try:
        assert stack.http is not None
        assert (await stack.http.get("/metrics")).status_code == 404
        assert stack.caches["cache"].l2 is None  # no L2 though Redis is configured
        assert not stack.apps[0].gateway.ask_cache_service  # the ingress's L1 knows all the cache does
        health = (await stack.http.get("/health")).json()
        assert health["cache"]["checks"]["l2"] == "off"
    finally:
        await stack.close()
