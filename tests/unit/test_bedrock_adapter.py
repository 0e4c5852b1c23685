"""The Bedrock Converse adapter: OpenAI-shaped requests in, Converse bodies out, and the Converse API's
documented responses and errors (tests/fixtures/bedrock) back into the unified types and gateway errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.providers.bedrock.adapter import adapter
from services.providers.bedrock.settings import BedrockSettings
from services.providers.settings import SETTINGS
from shared.config import ConfigError, load
from shared.errors import InvalidRequest, ProviderError
from tests.unit.adapter_io import fixture, request

KEY = BedrockSettings(api_key="bedrock-api-key", region="us-east-1")
MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
TOP_SONG: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "top_song",
        "description": "Get the most popular song played on a radio station.",
        "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]},
    },
}


def sent(body: dict[str, Any] | bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(adapter.build_request(request(body), MODEL, KEY).body)
    return parsed


def chat(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "x", "messages": list(messages), **params}


# --- build_request -------------------------------------------------------------------------------


def test_documented_openai_request_becomes_a_converse_call_with_the_api_key() -> None:
    call = adapter.build_request(request(fixture("openai/chat_request.json")), MODEL, KEY)
    assert call.method == "POST"
    assert call.url == f"https://bedrock-runtime.us-east-1.amazonaws.com/model/{MODEL}/converse"
    assert call.headers == {"Content-Type": "application/json", "Authorization": "Bearer bedrock-api-key"}
    assert call.secret_headers == frozenset({"Authorization"})
    assert json.loads(call.body) == {
        "messages": [{"role": "user", "content": [{"text": "Hello!"}]}],
        "system": [{"text": "You are a helpful assistant."}],
    }


def test_stream_request_and_an_arn_model_id_stay_one_path_segment() -> None:
    arn = (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
    )
    call = adapter.build_stream_request(
        request(chat({"role": "user", "content": "hi"})), arn, BedrockSettings(base_url="http://127.0.0.1:9/")
    )
    assert call.url == (
        "http://127.0.0.1:9/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile"
        "%2Fus.anthropic.claude-3-5-haiku-20241022-v1:0/converse-stream"
    )
    assert "Authorization" not in call.headers


def test_sampling_parameters_become_inference_config() -> None:
    body = sent(
        chat({"role": "user", "content": "hi"}, max_tokens=512, temperature=0.5, top_p=0.9, stop="END")
    )
    assert body["inferenceConfig"] == {
        "maxTokens": 512,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }


def test_n_above_one_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        sent(chat({"role": "user", "content": "hi"}, n=2))


def test_tools_and_tool_history_become_tool_config_tool_use_and_tool_result() -> None:
    body = sent(
        chat(
            {"role": "user", "content": "What is the most popular song on WZPZ?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "type": "function",
                        "function": {"name": "top_song", "arguments": '{"sign": "WZPZ"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                "content": '{"song": "Elemental Hotel", "artist": "8 Storey Hike"}',
            },
            {"role": "user", "content": "And its artist?"},
            tools=[TOP_SONG],
            tool_choice="auto",
        )
    )
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "top_song",
                    "description": "Get the most popular song played on a radio station.",
                    "inputSchema": {"json": TOP_SONG["function"]["parameters"]},
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "name": "top_song",
                        "input": {"sign": "WZPZ"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "content": [{"json": {"song": "Elemental Hotel", "artist": "8 Storey Hike"}}],
                    }
                },
                {"text": "And its artist?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "top_song"}}, {"tool": {"name": "top_song"}}),
    ],
)
def test_tool_choices(choice: Any, expected: dict[str, Any]) -> None:
    body = sent(chat({"role": "user", "content": "x"}, tools=[TOP_SONG], tool_choice=choice))
    assert body["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_leaves_the_tools_out_unless_the_history_needs_them() -> None:
    assert "toolConfig" not in sent(
        chat({"role": "user", "content": "x"}, tools=[TOP_SONG], tool_choice="none")
    )
    body = sent(
        chat(
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "top_song", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "plain text"},
            tools=[TOP_SONG],
            tool_choice="none",
        )
    )
    assert "toolChoice" not in body["toolConfig"] and len(body["toolConfig"]["tools"]) == 1
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "plain text"}]}}
    ]


def test_images_are_base64_bytes_with_their_format() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
    body = sent(chat({"role": "user", "content": [image, {"type": "text", "text": "What is it?"}]}))
    assert body["messages"][0]["content"] == [
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
        {"text": "What is it?"},
    ]
    with pytest.raises(InvalidRequest):
        sent(fixture("openai/chat_request_image_input.json"))  # an https URL


def test_a_bedrock_provider_needs_a_region_and_takes_it_from_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text("providers:\n  bedrock: {api_key: k}\n")
    with pytest.raises(ConfigError, match=r"providers\.bedrock\.region"):
        load(file, env={}, adapters=SETTINGS)
    from_env = load(file, env={"AWS_REGION": "eu-west-1"}, adapters=SETTINGS).providers["bedrock"]
    assert isinstance(from_env, BedrockSettings) and from_env.region == "eu-west-1"
    env = {"AWS_BEARER_TOKEN_BEDROCK": "b", "AWS_DEFAULT_REGION": "us-west-2"}
    enabled = load(env=env, adapters=SETTINGS).providers["bedrock"]
    assert isinstance(enabled, BedrockSettings) and (enabled.api_key, enabled.region) == ("b", "us-west-2")


# --- parse_response ------------------------------------------------------------------------------


def test_documented_text_response() -> None:
    result = adapter.parse_response(
        fixture("bedrock/converse_response.json"), provider="bedrock", model=MODEL
    )
    content = result.choices[0].message.content
    assert content is not None and content.startswith("Here is a list of 3 pop songs")
    assert result.choices[0].finish_reason == "stop" and result.model == MODEL
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        125,
        60,
        185,
    )


def test_documented_tool_use_response() -> None:
    result = adapter.parse_response(
        fixture("bedrock/converse_response_tool_use.json"), provider="bedrock", model=MODEL
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls  # type: ignore[misc]
    assert (call.id, call.function.name) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song")
    assert json.loads(call.function.arguments) == {"sign": "WZPZ"}


def test_cache_reads_count_in_the_prompt() -> None:
    usage = adapter.parse_response(
        fixture("bedrock/converse_response_cached.json"), provider="bedrock", model=MODEL
    ).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1512, 2, 1514)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1500


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(reason: str, expected: str) -> None:
    body = json.loads(fixture("bedrock/converse_response.json"))
    body["stopReason"] = reason
    assert adapter.parse_response(json.dumps(body).encode(), provider="b", model=MODEL).choices[
        0
    ].finish_reason == (expected)


@pytest.mark.parametrize(
    "body", [b"<html/>", b"{}", b'{"output": {}}', fixture("bedrock/error_throttling.json")]
)
def test_a_malformed_success_body_is_a_provider_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        adapter.parse_response(body, provider="bedrock", model=MODEL)
    assert caught.value.code == "provider_bad_response"


# --- parse_error ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "kind", "expected"),
    [
        ("error_throttling.json", 429, "ThrottlingException", (429, "ThrottlingException", True)),
        ("error_validation.json", 400, "ValidationException", (400, "ValidationException", False)),
        ("error_access_denied.json", 403, "AccessDeniedException", (502, "provider_auth_failed", False)),
        (
            "error_service_unavailable.json",
            503,
            "ServiceUnavailableException",
            (503, "provider_overloaded", True),
        ),
        ("error_model_not_ready.json", 429, "ModelNotReadyException", (429, "ModelNotReadyException", True)),
    ],
)
def test_bedrock_errors_by_status_with_the_error_type_as_code(
    name: str, status: int, kind: str, expected: tuple[int, str, bool]
) -> None:
    body = fixture(f"bedrock/{name}")
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": "1d2ac5c3-8d0b-4c0c-a77b-a13d1a1d6a1c",
    }
    error = adapter.parse_error(status, body, headers, provider="bedrock")
    assert (error.http_status, error.code, error.is_retryable) == expected
    assert error.message == "bedrock: " + json.loads(body)["message"]


def test_an_error_type_in_the_body_when_the_header_is_missing() -> None:
    body = (
        b'{"__type": "com.amazon.coral.validate#ValidationException", "Message": "Malformed input request"}'
    )
    error = adapter.parse_error(400, body, {}, provider="bedrock")
    assert (error.code, error.message) == ("ValidationException", "bedrock: Malformed input request")


def test_documented_converse_extras_go_through_and_nothing_else() -> None:
    guardrail = {"guardrailIdentifier": "gr-1", "guardrailVersion": "1", "trace": "enabled"}
    extras = json.dumps(
        {
            "guardrailConfig": guardrail,
            "additionalModelRequestFields": {"top_k": 40},
            "safetySettings": [],
            "messages": [],
        }
    ).encode()
    req = msgspec.structs.replace(request(chat({"role": "user", "content": "hi"})), extra_json=extras)
    body = json.loads(adapter.build_request(req, MODEL, KEY).body)
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "guardrailConfig": guardrail,
        "additionalModelRequestFields": {"top_k": 40},
    }
