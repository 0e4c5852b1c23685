"""Every adapter turns its provider's documented context-window overflow (tests/fixtures/<provider>/) into
`ContextWindowExceeded`, and that class survives the bus: the router's fallback keys on it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.providers.anthropic.adapter import adapter as anthropic
from services.providers.azure.adapter import adapter as azure
from services.providers.base import HttpAdapter
from services.providers.bedrock.adapter import adapter as bedrock
from services.providers.gemini.adapter import adapter as gemini
from services.providers.openai.adapter import adapter as openai
from shared.errors import (
    ContextWindowExceeded,
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    error_class,
    from_reply,
)
from shared.messages import ErrorReply, encode, reply_decoder
from tests.mockupstream.bedrock import exception
from tests.unit import adapter_io
from tests.unit.adapter_io import fixture

_VALIDATION = {"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"}


@pytest.mark.parametrize(
    ("adapter", "name", "headers"),
    [
        (openai, "openai/error_context_length.json", {}),
        (azure, "openai/error_context_length.json", {}),  # Azure answers in OpenAI's shape and code
        (anthropic, "anthropic/error_context_window.json", {}),
        (anthropic, "anthropic/error_context_limit.json", {}),
        (gemini, "gemini/error_context_window.json", {}),
        (bedrock, "bedrock/error_input_too_long.json", _VALIDATION),
        (bedrock, "bedrock/error_prompt_too_long.json", _VALIDATION),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_providers_overflow_body_is_a_context_window_error(
    adapter: HttpAdapter[Any], name: str, headers: dict[str, str]
) -> None:
    error = adapter.parse_error(400, fixture(name), headers, provider="p")
    assert type(error) is ContextWindowExceeded
    reply = error.to_reply()
    assert (reply.status, reply.type, reply.code, reply.param, reply.retryable) == (
        400, "invalid_request_error", "context_length_exceeded", "messages", False)
    assert reply.where == "provider:p"
    assert reply.message.startswith("p: ") and reply.message[3:] in fixture(name).decode()  # theirs, whole


@pytest.mark.parametrize(
    ("adapter", "status", "name", "headers"),
    [
        (anthropic, 400, "anthropic/error_invalid_request.json", {}),
        (gemini, 400, "gemini/error_invalid_argument.json", {}),
        (bedrock, 400, "bedrock/error_validation.json", _VALIDATION),
        # The overflow's words under another status or type are not an overflow.
        (bedrock, 400, "bedrock/error_input_too_long.json", {"x-amzn-ErrorType": "ThrottlingException"}),
        (anthropic, 500, "anthropic/error_context_window.json", {}),
    ],
)
def test_other_invalid_requests_stay_plain(
    adapter: HttpAdapter[Any], status: int, name: str, headers: dict[str, str]
) -> None:
    assert not isinstance(adapter.parse_error(status, fixture(name), headers, provider="p"),
                          ContextWindowExceeded)


def test_an_overflow_in_an_anthropic_stream_error_event_is_one_too() -> None:
    body = json.loads(fixture("anthropic/error_context_window.json"))
    parser = anthropic.stream_parser(provider="anthropic", model="m")
    with pytest.raises(ContextWindowExceeded):
        parser.feed("error", json.dumps({"type": "error", "error": body["error"]}))


def test_an_overflow_in_a_gemini_stream_is_one_too() -> None:
    parser = gemini.stream_parser(provider="gemini", model="m")
    with pytest.raises(ContextWindowExceeded):
        parser.feed(None, fixture("gemini/error_context_window.json").decode())


def test_bedrocks_overflow_exception_in_a_stream_is_one_too() -> None:
    message = json.loads(fixture("bedrock/error_input_too_long.json"))["message"]
    with pytest.raises(ContextWindowExceeded):
        adapter_io.feed(bedrock, exception("validationException", message), None, provider="b", model="m")


# --- errors cross the bus as their class ------------------------------------------------------------


def over_the_bus(error: GatewayError) -> GatewayError:
    received = reply_decoder.decode(encode(error.to_reply()))
    assert isinstance(received, ErrorReply)
    return from_reply(received)


@pytest.mark.parametrize(
    "error",
    [
        ContextWindowExceeded("too long", param="messages", where="provider:p"),
        RateLimited("slow down", retry_after=2.0),
        NotFound("no such model"),
        ProviderError("upstream broke", retryable=False),
    ],
)
def test_an_error_comes_back_as_the_same_class_with_the_same_fields(error: GatewayError) -> None:
    back = over_the_bus(error)
    assert type(back) is type(error)
    assert back.to_reply() == error.to_reply()


def test_an_unknown_code_falls_back_to_the_class_for_its_status() -> None:
    back = over_the_bus(InvalidRequest("bad extras", code="invalid_extra_fields"))
    assert type(back) is InvalidRequest and back.code == "invalid_extra_fields"
    assert error_class("no_such_code", 429) is RateLimited
    assert error_class(None, 599) is ProviderError
    assert error_class(None, 418) is InvalidRequest


def test_two_classes_cannot_claim_one_code() -> None:
    with pytest.raises(TypeError, match="context_length_exceeded"):
        type("Impostor", (InvalidRequest,), {"default_code": "context_length_exceeded"})
