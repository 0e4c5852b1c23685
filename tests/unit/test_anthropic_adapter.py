"""The Anthropic adapter: OpenAI-shaped requests in, Messages API bodies out, and Anthropic's documented and
recorded responses (tests/fixtures/anthropic) back into the unified types; errors: test_anthropic_errors.py."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from services.providers.anthropic.adapter import adapter
from services.providers.anthropic.settings import AnthropicSettings
from shared.errors import InvalidRequest
from tests.unit.adapter_io import fixture, request

KEY = AnthropicSettings(api_key="sk-ant-test")
MODEL = "claude-sonnet-4-5"


def sent(body: dict[str, Any] | bytes, config: AnthropicSettings = KEY) -> dict[str, Any]:
    """The JSON body the adapter would send to Anthropic for this client body."""
    parsed: dict[str, Any] = json.loads(adapter.build_request(request(body), MODEL, config).body)
    return parsed


def chat(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **params}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


USER_HELLO = {"role": "user", "content": "Hello!"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}

# --- build_request -------------------------------------------------------------------------------


def test_documented_openai_request_becomes_a_messages_call() -> None:
    call = adapter.build_request(request(fixture("openai/chat_request.json")), MODEL, KEY)
    assert call.method == "POST"
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers == {
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "x-api-key": "sk-ant-test",
    }
    assert "x-api-key" in call.secret_headers
    assert json.loads(call.body) == {
        "model": MODEL,
        "max_tokens": 4096,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": [text("Hello!")]}],
    }


def test_documented_openai_tools_request_becomes_anthropic_tools() -> None:
    documented = json.loads(fixture("openai/chat_request_tool_calls.json"))
    body = sent(fixture("openai/chat_request_tool_calls.json"))
    function = documented["tools"][0]["function"]
    assert body["tools"] == [
        {
            "name": function["name"],
            "description": function["description"],
            "input_schema": function["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == [
        {"role": "user", "content": [text("What is the weather like in Boston today?")]}
    ]


def test_documented_image_request_uses_a_url_source_and_its_max_tokens() -> None:
    documented = json.loads(fixture("openai/chat_request_image_input.json"))
    body = sent(fixture("openai/chat_request_image_input.json"))
    url = documented["messages"][0]["content"][1]["image_url"]["url"]
    assert body["max_tokens"] == 300
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                text("What is in this image?"),
                {"type": "image", "source": {"type": "url", "url": url}},
            ],
        }
    ]


def test_data_url_image_becomes_a_base64_source() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    body = sent(chat({"role": "user", "content": [image, text("Describe it.")]}))
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        text("Describe it."),
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/cat.png", "data:image/png,rawbytes", "cat.png"])
def test_unusable_image_url_is_a_client_error(url: str) -> None:
    image = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(InvalidRequest) as caught:
        sent(chat({"role": "user", "content": [image]}))
    assert (caught.value.http_status, caught.value.param) == (400, "messages")


def test_system_and_developer_messages_are_joined_into_the_system_prompt() -> None:
    body = sent(
        chat(
            {"role": "system", "content": "You are terse."},
            USER_HELLO,
            {"role": "developer", "content": [text("Answer in French.")]},
        )
    )
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": [text("Hello!")]}]


def test_tool_conversation_alternates_with_tool_results_merged_into_one_user_turn() -> None:
    body = sent(
        chat(
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "12C, light rain"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [text("4C, snow")]},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "user", "content": "Briefly."},
            tools=[WEATHER_TOOL],
        )
    )
    assert body["messages"] == [
        {"role": "user", "content": [text("Weather in Paris and Oslo?")]},
        {
            "role": "assistant",
            "content": [
                text("Checking both."),
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C, light rain"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [text("4C, snow")]},
                text("And tomorrow?"),
                text("Briefly."),
            ],
        },
    ]


def test_tool_results_open_their_user_turn_even_when_the_client_wrote_text_first() -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    body = sent(
        chat(
            USER_HELLO,
            {"role": "assistant", "tool_calls": [call]},
            {"role": "user", "content": "Use Celsius."},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"},
        )
    )
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
            text("Use Celsius."),
        ],
    }


def test_assistant_tool_call_without_text_or_arguments() -> None:
    body = sent(
        chat(
            USER_HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "toolu_9", "type": "function", "function": {"name": "now", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_9", "content": ""},
        )
    )
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]},
    ]


@pytest.mark.parametrize("arguments", ['{"location": ', "[1, 2]", '"Paris"'])
def test_tool_call_arguments_that_are_not_a_json_object_are_a_client_error(arguments: str) -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    with pytest.raises(InvalidRequest) as caught:
        sent(chat(USER_HELLO, {"role": "assistant", "tool_calls": [call]}))
    assert caught.value.code == "invalid_tool_arguments"


@pytest.mark.parametrize(
    ("params", "max_tokens"),
    [({"max_completion_tokens": 256, "max_tokens": 999}, 256), ({"max_tokens": 999}, 999), ({}, 4096)],
)
def test_max_tokens_is_always_sent(params: dict[str, int], max_tokens: int) -> None:
    assert sent(chat(USER_HELLO, **params))["max_tokens"] == max_tokens


def test_sampling_stop_and_user_parameters() -> None:
    body = sent(chat(USER_HELLO, temperature=0.3, top_p=0.9, stop="END", user="user-42", seed=7))
    assert {k: body[k] for k in ("temperature", "top_p", "stop_sequences", "metadata")} == {
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }
    assert "seed" not in body
    assert sent(chat(USER_HELLO, stop=["a", "b"]))["stop_sequences"] == ["a", "b"]


def test_fields_the_client_did_not_send_or_sent_as_null_are_not_sent() -> None:
    body = sent(chat(USER_HELLO, temperature=None, stop=None, user=None, stream=True))
    assert set(body) == {"model", "max_tokens", "messages"}


def test_vendor_extras_are_not_forwarded_to_anthropic() -> None:
    req = msgspec.structs.replace(request(chat(USER_HELLO)), extra_json=b'{"service_tier": "flex"}')
    body = json.loads(adapter.build_request(req, MODEL, KEY).body)
    assert "service_tier" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    params: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        params["tool_choice"] = choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel
    assert sent(chat(USER_HELLO, **params)).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    body = sent(chat(USER_HELLO, tool_choice="auto", parallel_tool_calls=False))
    assert "tool_choice" not in body and "tools" not in body


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    body = sent(chat(USER_HELLO, tools=[{"type": "function", "function": {"name": "now"}}]))
    assert body["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


def test_several_choices_are_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        sent(chat(USER_HELLO, n=2))
    assert (caught.value.http_status, caught.value.param) == (400, "n")


def test_configured_base_url_headers_and_no_key() -> None:
    config = AnthropicSettings(
        base_url="https://proxy.example/anthropic/", headers={"anthropic-beta": "context-1m-2025-08-07"}
    )
    call = adapter.build_request(request(chat(USER_HELLO)), MODEL, config)
    assert call.url == "https://proxy.example/anthropic/v1/messages"
    assert call.headers == {
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "anthropic-beta": "context-1m-2025-08-07",
    }
    assert call.secret_headers == frozenset({"anthropic-beta"})


# --- parse_response ------------------------------------------------------------------------------


def parse(body: bytes | dict[str, Any], model: str = MODEL) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return adapter.parse_response(raw, provider="anthropic", model=model)


def test_documented_text_response() -> None:
    result = parse(fixture("anthropic/messages_response.json"))
    assert result.id == "msg_01234"
    assert result.model == MODEL  # the documented example has no model: the one we asked for stands in
    assert (result.provider, result.target_model) == ("anthropic", MODEL)
    [choice] = result.choices
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert choice.message.content == "Here's the answer to your question..."
    assert choice.message.tool_calls is msgspec.UNSET
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 50, 150)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0


def test_documented_tool_use_response() -> None:
    result = parse(fixture("anthropic/messages_response_tool_use.json"))
    [choice] = result.choices
    assert result.model == "claude-3-opus-20240229"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == (
        "<thinking>I need to call the get_weather function, and the user wants SF, "
        "which is likely San Francisco, CA.</thinking>"
    )
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == (
        "toolu_01A09q90qw90lq917835lq9",
        "function",
        "get_weather",
    )
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert result.usage.total_tokens == 0  # the documented example leaves usage out


def test_recorded_response_with_full_usage() -> None:
    result = parse(fixture("anthropic/messages_response_recorded.json"))
    assert (result.id, result.model) == ("msg_01Egs18hRzhru3uGon3qesbA", "claude-sonnet-4-5-20250929")
    assert json.loads(result.choices[0].message.content) == {
        "product_name": "Green Tea",
        "price": 5.50,
        "quantity": 2,
    }
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        249,
        26,
        275,
    )


def test_recorded_tool_use_response() -> None:
    result = parse(fixture("anthropic/messages_response_tool_use_recorded.json"))
    [choice] = result.choices
    assert choice.message.content == (
        "I'll get the weather for each of those cities. Let me start by checking San Francisco."
    )
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_01LRanfq6DmHn1yDTB4d1SAh", "get_weather")
    # the input object as Anthropic sent it, byte for byte (here as pretty-printed in the fixture file)
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "units": "f"}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (701, 93)


def test_server_tool_blocks_are_not_client_tool_calls() -> None:
    result = parse(fixture("anthropic/messages_response_server_tool_use.json"))
    [choice] = result.choices
    assert choice.message.content == "I'll check the weather for all three cities in Celsius simultaneously."
    assert [c.id for c in choice.message.tool_calls] == ["toolu_011MDRpaZRMRRjtFkJizD6nS"]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {
        "location": "San Francisco, CA",
        "units": "c",
    }


def test_cached_prompt_tokens_count_into_the_prompt() -> None:
    body = json.loads(fixture("anthropic/messages_response_recorded.json"))
    body["usage"].update(
        input_tokens=50, cache_creation_input_tokens=200, cache_read_input_tokens=1800, output_tokens=350
    )
    usage = parse(body).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2050, 350, 2400)
    assert usage.prompt_tokens_details.cached_tokens == 1800


def test_null_cache_counts_are_zero() -> None:
    body = json.loads(fixture("anthropic/messages_response.json"))
    body["usage"].update(cache_creation_input_tokens=None, cache_read_input_tokens=None)
    assert parse(body).usage.prompt_tokens == 100


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish_reason: str) -> None:
    body = json.loads(fixture("anthropic/messages_response.json"))
    body["stop_reason"] = stop_reason
    assert parse(body).choices[0].finish_reason == finish_reason


def test_several_text_blocks_are_joined_and_no_text_is_null_content() -> None:
    body = json.loads(fixture("anthropic/messages_response.json"))
    body["content"] = [
        text("The answer "),
        {"type": "thinking", "thinking": "hmm", "signature": "x"},
        text("is 4."),
    ]
    assert parse(body).choices[0].message.content == "The answer is 4."
    body["content"] = []
    assert parse(body).choices[0].message.content is None
