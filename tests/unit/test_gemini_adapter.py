"""The Gemini adapter: OpenAI-shaped requests in, `generateContent` bodies out, and Gemini's documented
response and error shapes (tests/fixtures/gemini) back into the unified types and gateway errors."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from services.providers.gemini.adapter import adapter
from services.providers.gemini.settings import GeminiSettings
from services.providers.settings import SETTINGS
from shared.config import load
from shared.errors import InvalidRequest, ProviderError
from tests.unit.adapter_io import fixture, request

KEY = GeminiSettings(api_key="gemini-key")
MODEL = "gemini-2.5-flash"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}


def sent(body: dict[str, Any] | bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(adapter.build_request(request(body), MODEL, KEY).body)
    return parsed


def chat(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "messages": list(messages), **params}


# --- build_request -------------------------------------------------------------------------------


def test_documented_openai_request_becomes_generate_content() -> None:
    call = adapter.build_request(request(fixture("openai/chat_request.json")), MODEL, KEY)
    assert call.method == "POST"
    assert (
        call.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert call.headers == {"Content-Type": "application/json", "x-goog-api-key": "gemini-key"}
    assert call.secret_headers == frozenset({"x-goog-api-key"})
    assert json.loads(call.body) == {
        "contents": [{"role": "user", "parts": [{"text": "Hello!"}]}],
        "systemInstruction": {"parts": [{"text": "You are a helpful assistant."}]},
    }


def test_stream_request_asks_for_sse_and_accepts_a_models_prefix() -> None:
    config = GeminiSettings(api_key="k", base_url="http://127.0.0.1:9/")
    call = adapter.build_stream_request(
        request(chat({"role": "user", "content": "hi"})), "models/gemini-2.0-flash", config
    )
    assert call.url == "http://127.0.0.1:9/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"


def test_sampling_parameters_become_generation_config() -> None:
    body = sent(
        chat(
            {"role": "user", "content": "hi"},
            temperature=0.2,
            top_p=0.9,
            max_completion_tokens=64,
            stop=["END"],
            n=2,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0.25,
        )
    )
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "seed": 7,
    }


def test_json_schema_response_format_becomes_a_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = sent(
        chat(
            {"role": "user", "content": "hi"},
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        )
    )
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "low"}),
        ("gemini-3-flash", "none", {"thinkingLevel": "minimal"}),
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget_or_level(model: str, effort: str, expected: Any) -> None:
    req = request(chat({"role": "user", "content": "think"}, reasoning_effort=effort))
    body = json.loads(adapter.build_request(req, model, KEY).body)
    assert body["generationConfig"] == {"thinkingConfig": expected}


def test_tools_become_function_declarations_with_the_json_schema_as_is() -> None:
    body = sent(chat({"role": "user", "content": "weather?"}, tools=[WEATHER_TOOL], tool_choice="required"))
    function = WEATHER_TOOL["function"]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather at a place",
                    "parametersJsonSchema": function["parameters"],
                }
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_a_named_tool_choice_allows_only_that_function() -> None:
    body = sent(
        chat(
            {"role": "user", "content": "x"},
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_tool_call_history_becomes_function_call_and_function_response_parts() -> None:
    body = sent(
        chat(
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 22}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            tools=[WEATHER_TOOL],
        )
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temperature": 22}}},
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
            ],
        },
    ]


def test_a_tool_result_for_an_unknown_call_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        sent(chat({"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}))
    assert caught.value.http_status == 400


def test_images_are_inline_data_and_only_data_urls_are_accepted() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = sent(chat({"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}))
    assert body["contents"][0]["parts"] == [
        {"text": "What is it?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]
    with pytest.raises(InvalidRequest):
        sent(fixture("openai/chat_request_image_input.json"))  # an https URL


def test_consecutive_same_role_messages_are_merged() -> None:
    body = sent(chat({"role": "user", "content": "one"}, {"role": "user", "content": "two"}))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]


def test_the_environment_enables_gemini() -> None:
    assert load(env={"GEMINI_API_KEY": "g"}, adapters=SETTINGS).providers["gemini"].api_key == "g"


# --- parse_response ------------------------------------------------------------------------------


def test_text_response_with_thinking_tokens_counted_as_completion() -> None:
    result = adapter.parse_response(fixture("gemini/generate_response.json"), provider="gemini", model=MODEL)
    assert result.id == "Jx4vaOyDLsO-1dkPjL7ayAk" and result.model == "gemini-2.5-flash"
    assert (
        result.choices[0].message.content == "AI learns patterns from data to make predictions or decisions."
    )
    assert result.choices[0].finish_reason == "stop"
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 647, 655)
    assert (
        usage.completion_tokens_details is not None
        and usage.completion_tokens_details.reasoning_tokens == 636
    )


def test_function_call_response_becomes_a_tool_call() -> None:
    result = adapter.parse_response(
        fixture("gemini/generate_response_function_call.json"), provider="gemini", model=MODEL
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls  # type: ignore[misc]
    assert call.function.name == "schedule_meeting" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {
        "attendees": ["Bob", "Alice"],
        "date": "2025-03-27",
        "time": "10:00",
        "topic": "Q3 planning",
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    body = json.loads(fixture("gemini/generate_response.json"))
    body["candidates"][0]["finishReason"] = reason
    result = adapter.parse_response(json.dumps(body).encode(), provider="gemini", model=MODEL)
    assert result.choices[0].finish_reason == expected


def test_a_blocked_prompt_is_a_content_filter_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        adapter.parse_response(
            fixture("gemini/generate_response_blocked.json"), provider="gemini", model=MODEL
        )
    assert (caught.value.http_status, caught.value.code) == (400, "content_filter")
    assert "SAFETY" in caught.value.message


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"{}", b'{"candidates": "x"}'])
def test_a_malformed_success_body_is_a_provider_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        adapter.parse_response(body, provider="gemini", model=MODEL)
    assert (caught.value.http_status, caught.value.code) == (502, "provider_bad_response")


# --- parse_error ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("error_rate_limit.json", 429, (429, "RESOURCE_EXHAUSTED", True)),
        ("error_invalid_api_key.json", 400, (502, "provider_auth_failed", False)),
        ("error_invalid_argument.json", 400, (400, "INVALID_ARGUMENT", False)),
        ("error_not_found.json", 404, (404, "NOT_FOUND", False)),
        ("error_overloaded.json", 503, (503, "provider_overloaded", True)),
    ],
)
def test_gemini_error_bodies(name: str, status: int, expected: tuple[int, str, bool]) -> None:
    body = fixture(f"gemini/{name}")
    error = adapter.parse_error(status, body, {}, provider="gemini")
    assert (error.http_status, error.code, error.is_retryable) == expected
    assert error.message == "gemini: " + json.loads(body)["error"]["message"]


def test_429_waits_for_the_retry_info_delay_unless_a_header_says_otherwise() -> None:
    body = fixture("gemini/error_rate_limit.json")
    assert adapter.parse_error(429, body, {}, provider="gemini").retry_after == 37.0
    assert adapter.parse_error(429, body, {"Retry-After": "3"}, provider="gemini").retry_after == 3.0


def test_an_error_wrapped_in_an_array_and_a_non_json_error() -> None:
    wrapped = b"[" + fixture("gemini/error_overloaded.json") + b"]"
    assert adapter.parse_error(503, wrapped, {}, provider="gemini").message == (
        "gemini: The model is overloaded. Please try again later."
    )
    error = adapter.parse_error(502, b"<html>Bad Gateway</html>", {}, provider="gemini")
    assert (error.http_status, error.message) == (502, "gemini: <html>Bad Gateway</html>")


def test_documented_gemini_extras_go_through_and_nothing_else() -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    extras = json.dumps(
        {
            "safetySettings": safety,
            "cachedContent": "cachedContents/abc",
            "service_tier": "flex",
            "contents": "not ours to override",
        }
    ).encode()
    req = msgspec.structs.replace(request(chat({"role": "user", "content": "hi"})), extra_json=extras)
    body = json.loads(adapter.build_request(req, MODEL, KEY).body)
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "safetySettings": safety,
        "cachedContent": "cachedContents/abc",
    }
    with pytest.raises(InvalidRequest):
        adapter.build_request(msgspec.structs.replace(req, extra_json=b"[1]"), MODEL, KEY)
