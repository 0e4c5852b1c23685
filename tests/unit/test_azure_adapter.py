"""The Azure OpenAI adapter: OpenAI's body at Azure's two routes with the `api-key` header, and Azure's
error variants and content-filter answers (tests/fixtures/azure) mapped into gateway errors and results."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from services.providers.azure.adapter import adapter
from services.providers.azure.settings import AzureSettings
from services.providers.settings import SETTINGS
from services.providers.sse import SSEDecoder
from shared.config import ConfigError, load
from tests.unit.adapter_io import fixture, request

ENDPOINT = "https://my-resource.openai.azure.com"
CONFIG = AzureSettings(api_key="azure-key", base_url=ENDPOINT + "/")
HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}


def test_deployment_route_with_the_default_api_version_and_the_api_key_header() -> None:
    call = adapter.build_request(request(fixture("openai/chat_request.json")), "prod-gpt4o", CONFIG)
    assert call.method == "POST"
    assert call.url == f"{ENDPOINT}/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"
    assert call.headers == {"Content-Type": "application/json", "api-key": "azure-key"}
    assert call.secret_headers == frozenset({"api-key"})
    documented = json.loads(fixture("openai/chat_request.json"))
    assert json.loads(call.body) == {**documented, "model": "prod-gpt4o"}  # OpenAI's translation, reused


def test_configured_api_version_and_a_deployment_name_that_needs_quoting() -> None:
    config = msgspec.structs.replace(CONFIG, api_version="2025-04-01-preview")
    call = adapter.build_request(request(HELLO), "team a/gpt", config)
    assert (
        call.url
        == f"{ENDPOINT}/openai/deployments/team%20a%2Fgpt/chat/completions?api-version=2025-04-01-preview"
    )


def test_v1_route_puts_the_deployment_in_the_body() -> None:
    config = msgspec.structs.replace(CONFIG, api_version="v1")
    call = adapter.build_stream_request(request(HELLO), "prod-gpt4o", config)
    assert call.url == f"{ENDPOINT}/openai/v1/chat/completions"
    body = json.loads(call.body)
    assert body["model"] == "prod-gpt4o"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_a_configured_api_key_header_replaces_ours() -> None:
    config = msgspec.structs.replace(CONFIG, api_key=None, headers={"Authorization": "Bearer entra-token"})
    call = adapter.build_request(request(HELLO), "d", config)
    assert call.headers == {"Content-Type": "application/json", "Authorization": "Bearer entra-token"}
    assert call.secret_headers == frozenset({"Authorization"})


def test_an_azure_provider_without_an_endpoint_is_refused_at_start(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text("providers:\n  azure: {api_key: k}\n")
    with pytest.raises(ConfigError, match=r"providers\.azure\.base_url"):
        load(file, env={}, adapters=SETTINGS)


def test_the_environment_enables_azure_with_its_endpoint_and_version() -> None:
    env = {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": ENDPOINT, "OPENAI_API_VERSION": "v1"}
    azure = load(env=env, adapters=SETTINGS).providers["azure"]
    assert isinstance(azure, AzureSettings)
    assert (azure.api_key, azure.base_url, azure.api_version) == ("k", ENDPOINT, "v1")


def test_content_filtered_answer_keeps_its_finish_reason() -> None:
    result = adapter.parse_response(
        fixture("azure/chat_response_content_filter.json"), provider="azure", model="prod-gpt4o"
    )
    assert result.choices[0].finish_reason == "content_filter"
    assert result.choices[0].message.content is None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (21, 15)


def test_azure_stream_with_its_prompt_filter_chunk_first() -> None:
    parser = adapter.stream_parser(provider="azure", model="prod-gpt4o")
    deltas = []
    for event, data in adapter.stream_decoder().feed(fixture("azure/stream_text.txt")):
        deltas += parser.feed(event, data)
    summary = parser.end()
    assert "".join(d.content or "" for d in deltas) == "Hello"
    assert deltas[0].role == "assistant"
    assert summary.id == "chatcmpl-AzStream1" and summary.finish_reason == "stop"
    assert summary.usage is not None and summary.usage.total_tokens == 10
    assert isinstance(adapter.stream_decoder(), SSEDecoder)


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("error_content_filter.json", 400, (400, "content_filter", False)),
        ("error_rate_limit.json", 429, (429, "rate_limit_exceeded", True)),
        ("error_unauthorized.json", 401, (502, "provider_auth_failed", False)),
        ("error_deployment_not_found.json", 404, (404, "DeploymentNotFound", False)),
    ],
)
def test_azure_error_bodies(name: str, status: int, expected: tuple[int, str, bool]) -> None:
    body = fixture(f"azure/{name}")
    error = adapter.parse_error(status, body, {"retry-after": "6"}, provider="azure")
    assert (error.http_status, error.code, error.is_retryable) == expected
    assert error.message == "azure: " + json.loads(body)["error"]["message"]


def test_a_content_filter_400_named_only_by_its_innererror_is_still_a_content_filter() -> None:
    body = json.loads(fixture("azure/error_content_filter.json"))
    body["error"]["code"] = "400"
    error = adapter.parse_error(400, json.dumps(body).encode(), {}, provider="azure")
    assert (error.http_status, error.code) == (400, "content_filter")


def test_429_waits_as_azure_says() -> None:
    error = adapter.parse_error(
        429, fixture("azure/error_rate_limit.json"), {"retry-after-ms": "6000"}, provider="azure"
    )
    assert error.retry_after == 6.0
