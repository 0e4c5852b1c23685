"""A route target's configured prices are what the gateway reports an answer cost, streamed or not, for a
model the pricing table does not know and over one it does; targets without prices keep the table's."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config


def cost_total(model: str) -> float:
    return REGISTRY.get_sample_value("llm_edge_cost_usd_total", {"provider": "up", "model": model}) or 0.0


async def test_configured_target_prices_are_the_reported_cost(nats_server: Nats, upstream: MockUpstream) -> None:
    config = make_config(
        nats_server.url,
        providers={"up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"}},
        models=[
            {"name": "tuned", "targets": [{"provider": "up", "model": "my-finetune", "input_price": 2.0,
                                           "output_price": 8.0}]},
            {"name": "dear", "targets": [{"provider": "up", "model": "gpt-4o-mini", "input_price": 1.0,
                                          "output_price": 3.0}]},
            {"name": "listed", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]},
        ],
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    try:
        assert stack.http is not None
        for model, (per_in, per_out) in {"tuned": (2.0, 8.0), "dear": (1.0, 3.0), "listed": (0.15, 0.60)}.items():
            body = {"model": model, "messages": [{"role": "user", "content": f"price me as {model}"}]}
            answer = await stack.http.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            usage = answer.json()["usage"]
            expected = (usage["prompt_tokens"] * per_in + usage["completion_tokens"] * per_out) * 1e-6
            assert expected > 0
            assert float(answer.headers["x-llm-edge-cost-usd"]) == round(expected, 8), model

        # A stream is charged the same way (its cost reaches the metrics and the spend limits, not a header).
        before = cost_total("my-finetune")
        stream = await stack.openai().chat.completions.create(
            model="tuned", messages=[{"role": "user", "content": "stream me a price"}], stream=True,
            stream_options={"include_usage": True})
        usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
        assert len(usages) == 1
        expected = (usages[0].prompt_tokens * 2.0 + usages[0].completion_tokens * 8.0) * 1e-6
        assert cost_total("my-finetune") - before == pytest.approx(expected)
    finally:
        await stack.close()
