"""The cost a provider worker reports for an answer: priced by the model the answer reports (an Azure
deployment answers with the model behind it), with a route target's configured prices over the table's."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.providers.azure.adapter import adapter as azure
from services.providers.settings import SETTINGS
from services.providers.worker import ProviderWorker
from shared.config import build
from shared.messages import Usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def worker() -> ProviderWorker:
    config = build({"providers": {"az": {"adapter": "azure", "base_url": "https://x.openai.azure.com",
                                         "api_key": "k"}}}, SETTINGS)
    return ProviderWorker(config, "az")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_azure_answer_is_priced_by_the_model_it_reports_not_the_deployment_name() -> None:
    az = worker()
    assert az.adapter is azure
    # Recorded from Azure: deployment `prod-gpt4o` answers as `gpt-4o-2024-08-06`, 21 prompt and 15
    # completion tokens.
    result = azure.parse_response((FIXTURES / "azure" / "chat_response_content_filter.json").read_bytes(),
                                       provider="az", model="prod-gpt4o")
    assert result.model == "gpt-4o-2024-08-06"
    before = sample("llm_edge_cost_usd_total", provider="az", model="prod-gpt4o")
    cost = az.account("prod-gpt4o", result.usage, 200, 0.1, reported=result.model)
    assert cost == pytest.approx(21 * 2.50e-6 + 15 * 10.00e-6)  # gpt-4o's price
    assert sample("llm_edge_cost_usd_total", provider="az", model="prod-gpt4o") - before == pytest.approx(cost)


def test_an_azure_stream_is_priced_by_the_model_its_chunks_report() -> None:
    parser = azure.stream_parser(provider="az", model="prod-gpt4o")
    for event, data in azure.stream_decoder().feed((FIXTURES / "azure" / "stream_text.txt").read_bytes()):
        parser.feed(event, data)
    summary = parser.end()
    assert summary.model.startswith("gpt-4o") and summary.usage is not None
    usage = summary.usage
    assert worker().account("prod-gpt4o", usage, 200, 0.1, reported=summary.model) == pytest.approx(
        usage.prompt_tokens * 2.50e-6 + usage.completion_tokens * 10.00e-6)


def test_configured_target_prices_are_the_reported_cost() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100)
    # Over the table's price (a Data Zone deployment costs more than gpt-4o's list price) ...
    assert worker().account("prod-gpt4o", usage, 200, 0.1, reported="gpt-4o-2024-08-06", prices=(2.75, 11.0)) == \
        pytest.approx(1000 * 2.75e-6 + 100 * 11.0e-6)
    # ... and for a model the table does not know.
    assert worker().account("my-finetune", usage, 200, 0.1, reported="my-finetune", prices=(1.0, 4.0)) == \
        pytest.approx(1000 * 1.0e-6 + 100 * 4.0e-6)


def test_an_unknown_model_without_configured_prices_is_counted_as_unpriced() -> None:
    before = sample("llm_edge_unpriced_requests_total", provider="az", model="my-finetune")
    usage = Usage(prompt_tokens=10, completion_tokens=10, total_tokens=20)
    assert worker().account("my-finetune", usage, 200, 0.1, reported="my-finetune") == 0.0
    assert sample("llm_edge_unpriced_requests_total", provider="az", model="my-finetune") - before == 1
