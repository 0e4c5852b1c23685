"""The OpenAI adapter against OpenAI's documented request, response and error bodies (tests/fixtures/openai)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.providers.openai.adapter import adapter, openai_compatible
from services.providers.openai.settings import OpenAISettings
from shared.errors import GatewayError, InvalidRequest, ProviderError
from shared.messages import ChatRequest, FunctionCall, ToolCall

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai"
KEY = OpenAISettings(api_key="sk-test")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(body: dict[str, Any] | bytes) -> ChatRequest:
    """A client body decoded the way the ingress decodes it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return msgspec.json.decode(raw, type=ChatRequest)


def sent(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body)
    return parsed


HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}

# --- build_request -------------------------------------------------------------------------------


def test_documented_request_is_sent_as_documented_with_the_provider_model() -> None:
    documented = json.loads(fixture("chat_request.json"))
    call = adapter.build_request(request(fixture("chat_request.json")), "gpt-4o-2024-08-06", KEY)
    assert call.method == "POST"
    assert call.url == "https://api.openai.com/v1/chat/completions"
    assert call.headers == {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
    assert "Authorization" in call.secret_headers
    assert sent(call.body) == {**documented, "model": "gpt-4o-2024-08-06"}


@pytest.mark.parametrize("name", ["chat_request_tool_calls.json", "chat_request_image_input.json"])
def test_documented_tools_and_images_requests_round_trip_exactly(name: str) -> None:
    documented = json.loads(fixture(name))
    call = adapter.build_request(request(fixture(name)), documented["model"], KEY)
    assert sent(call.body) == documented


def test_fields_the_client_did_not_send_are_not_sent() -> None:
    call = adapter.build_request(request(HELLO), "gpt-4o", KEY)
    assert sent(call.body) == HELLO


def test_complete_request_never_asks_for_a_stream() -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2}
    call = adapter.build_request(request(body), "gpt-4o", KEY)
    assert sent(call.body) == {**HELLO, "temperature": 0.2}


def test_tool_call_history_keeps_ids_types_and_tool_results() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "What is the weather like in Boston today?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{"location": "Boston, MA"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 22}'},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}},
        "parallel_tool_calls": False,
    }
    call = adapter.build_request(request(body), "gpt-4o", KEY)
    messages = sent(call.body)["messages"]
    assert messages[1]["tool_calls"] == body["messages"][1]["tool_calls"]  # type: ignore[index]
    assert messages[2] == body["messages"][2]  # type: ignore[index]
    assert sent(call.body)["tool_choice"] == body["tool_choice"]
    assert sent(call.body)["parallel_tool_calls"] is False


def test_vendor_extras_are_merged_into_the_top_level() -> None:
    extras = b'{"service_tier": "flex", "prediction": {"type": "content", "content": "x = 1"}}'
    req = msgspec.structs.replace(request(HELLO), extra_json=extras)
    body = sent(adapter.build_request(req, "gpt-4o", KEY).body)
    assert body == {**HELLO, "service_tier": "flex", "prediction": {"type": "content", "content": "x = 1"}}


def test_extras_cannot_override_the_model_or_switch_streaming_on() -> None:
    extras = b'{"model": "gpt-4-32k", "stream": true, "store": false}'
    req = msgspec.structs.replace(request(HELLO), extra_json=extras)
    body = sent(adapter.build_request(req, "gpt-4o-mini", KEY).body)
    assert body == {**HELLO, "model": "gpt-4o-mini", "store": False}


@pytest.mark.parametrize("extras", [b"[1, 2]", b'"flex"', b"{not json"])
def test_extras_that_are_not_a_json_object_are_a_client_error(extras: bytes) -> None:
    req = msgspec.structs.replace(request(HELLO), extra_json=extras)
    with pytest.raises(InvalidRequest) as caught:
        adapter.build_request(req, "gpt-4o", KEY)
    assert caught.value.http_status == 400


def test_configured_base_url_and_headers() -> None:
    config = OpenAISettings(
        api_key="sk-test",
        base_url="https://gateway.example/openai/v1/",
        headers={"OpenAI-Organization": "org-1", "authorization": "Bearer other"},
    )
    call = adapter.build_request(request(HELLO), "gpt-4o", config)
    assert call.url == "https://gateway.example/openai/v1/chat/completions"
    # a configured header replaces ours whatever its case, so only one Authorization goes out
    assert call.headers == {
        "Content-Type": "application/json",
        "OpenAI-Organization": "org-1",
        "authorization": "Bearer other",
    }
    assert {"authorization", "OpenAI-Organization"} <= call.secret_headers


def test_openai_compatible_server_without_a_key_gets_no_authorization_header() -> None:
    call = openai_compatible.build_request(request(HELLO), "llama-3.1-8b", OpenAISettings())
    assert openai_compatible.name == "openai_compatible"
    assert call.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert call.headers == {"Content-Type": "application/json"}
    assert call.secret_headers == frozenset()
    assert sent(call.body)["model"] == "llama-3.1-8b"


# --- parse_response ------------------------------------------------------------------------------


def test_documented_response() -> None:
    result = adapter.parse_response(fixture("chat_response.json"), provider="openai", model="gpt-5.4")
    assert (result.id, result.created, result.model) == (
        "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        1741569952,
        "gpt-5.4",
    )
    assert (result.provider, result.target_model) == ("openai", "gpt-5.4")
    [choice] = result.choices
    assert choice.message.content == "Hello! How can I assist you today?"
    assert choice.message.refusal is None
    assert choice.message.tool_calls is msgspec.UNSET
    assert choice.finish_reason == "stop"
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (19, 10, 29)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0


def test_documented_tool_calls_response() -> None:
    result = adapter.parse_response(
        fixture("chat_response_tool_calls.json"), provider="openai", model="gpt-4o-mini"
    )
    [choice] = result.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls == [
        ToolCall(
            id="call_abc123",
            function=FunctionCall(name="get_current_weather", arguments='{\n"location": "Boston, MA"\n}'),
        )
    ]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"location": "Boston, MA"}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        82,
        17,
        99,
    )
    assert result.usage.prompt_tokens_details is None  # the example does not report it


def test_documented_logprobs_response_parses_without_its_logprobs() -> None:
    result = adapter.parse_response(
        fixture("chat_response_logprobs.json"), provider="openai", model="gpt-4o-mini"
    )
    assert result.choices[0].message.content == "Hello! How can I assist you today?"
    assert result.choices[0].logprobs is None  # the unified Choice does not carry logprobs (yet)


def test_cached_and_reasoning_tokens_and_fingerprint_are_reported() -> None:
    body = json.loads(fixture("chat_response.json"))
    body["system_fingerprint"] = "fp_44709d6fcb"
    body["usage"] = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0},
    }
    result = adapter.parse_response(json.dumps(body).encode(), provider="openai", model="o3")
    assert result.system_fingerprint == "fp_44709d6fcb"
    usage = result.usage
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1920
    assert (
        usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 64
    )
    assert usage.total_tokens == 2306


def test_a_minimal_compatible_server_response_is_filled_in() -> None:
    body = b'{"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}'
    result = openai_compatible.parse_response(body, provider="local", model="llama")
    assert result.id.startswith("chatcmpl-") and result.created > 1_700_000_000
    assert result.model == "llama" and result.provider == "local"
    assert result.choices[0].message.content == "hi"
    assert result.usage.total_tokens == 0


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        b'{"object": "chat.completion"}',
        b'{"choices": "none"}',
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 42}}]}',
        b'{"error": {"message": "upstream model crashed"}}',
    ],
)
def test_a_malformed_success_body_is_a_provider_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        adapter.parse_response(body, provider="my-vllm", model="llama")
    error = caught.value
    assert (error.http_status, error.code, error.is_retryable) == (502, "provider_bad_response", False)
    assert error.where == "provider:my-vllm"
    assert error.message.startswith("my-vllm: ")


# --- parse_error ---------------------------------------------------------------------------------


def error(status: int, body: bytes, headers: dict[str, str] | None = None) -> GatewayError:
    return adapter.parse_error(status, body, headers or {}, provider="openai")


def test_400_keeps_openai_code_param_and_message() -> None:
    reply = error(400, fixture("error_context_length.json")).to_reply()
    assert (reply.status, reply.type, reply.code, reply.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert reply.message.startswith("openai: This model's maximum context length is 4097 tokens.")
    assert reply.retryable is False and reply.where == "provider:openai"


def test_401_is_our_credential_so_the_caller_sees_502() -> None:
    reply = error(401, fixture("error_invalid_api_key.json")).to_reply()
    assert (reply.status, reply.code, reply.retryable) == (502, "provider_auth_failed", False)
    assert reply.message == "openai: Incorrect API key provided"


def test_404_model_not_found() -> None:
    reply = error(404, fixture("error_model_not_found.json")).to_reply()
    assert (reply.status, reply.code) == (404, "model_not_found")
    assert "`gpt-5.5-pro` does not exist" in reply.message


@pytest.mark.parametrize(
    ("headers", "wait"), [({"Retry-After": "20"}, 20.0), ({"retry-after-ms": "1500"}, 1.5)]
)
def test_429_rate_limit_is_retryable_after_the_advertised_delay(headers: dict[str, str], wait: float) -> None:
    reply = error(429, fixture("error_rate_limit.json"), headers).to_reply()
    assert (reply.status, reply.type, reply.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert reply.retryable is True and reply.retry_after == wait
    assert "Please try again in 41.724s" in reply.message


def test_429_out_of_quota_is_not_retryable() -> None:
    reply = error(429, fixture("error_insufficient_quota.json")).to_reply()
    assert (reply.status, reply.code, reply.retryable) == (429, "insufficient_quota", False)
    assert "You exceeded your current quota" in reply.message


def test_500_is_a_retryable_provider_error() -> None:
    reply = error(500, fixture("error_server.json")).to_reply()
    assert (reply.status, reply.code, reply.retryable) == (502, "provider_error", True)
    assert reply.message == "openai: The server had an error while processing your request. Sorry about that!"


def test_non_json_error_body_gives_its_first_200_characters() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 500 + b"</body></html>"
    reply = error(502, page).to_reply()
    assert reply.message == "openai: " + page.decode()[:200]
    assert (reply.status, reply.retryable) == (502, True)


def test_503_plain_text_and_empty_bodies() -> None:
    overloaded = error(
        503, b"upstream connect error or disconnect/reset before headers\n", {"Retry-After": "3"}
    )
    assert overloaded.message == "openai: upstream connect error or disconnect/reset before headers"
    assert (overloaded.http_status, overloaded.retry_after, overloaded.is_retryable) == (503, 3.0, True)
    assert error(500, b"").message == "openai: HTTP 500 with an empty body"


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b'{"error": "model is loading"}', "model is loading", None),
        (b'{"message": "Invalid token", "object": "error"}', "Invalid token", None),
        (
            b'{"object": "error", "error": {"message": "bad n", "type": "BadRequestError", "code": 400}}',
            "bad n",
            "400",
        ),
        (
            b'{"error": {"message": "", "type": "invalid_request_error"}}',
            '{"error": {"message": "", "type": "invalid_request_error"}}',
            None,
        ),
        (
            b'{"detail": [{"loc": ["body"], "msg": "field required"}]}',
            '{"detail": [{"loc": ["body"], "msg": "field required"}]}',
            None,
        ),
    ],
)
def test_compatible_servers_error_shapes(body: bytes, message: str, code: str | None) -> None:
    reply = openai_compatible.parse_error(400, body, {}, provider="openai_compatible").to_reply()
    assert reply.message == f"openai_compatible: {message}"
    assert reply.code == code and reply.status == 400
