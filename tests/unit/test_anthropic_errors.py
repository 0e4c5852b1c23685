"""The Anthropic adapter's error mapping: malformed success bodies, and Anthropic's documented and recorded
error replies (tests/fixtures/anthropic) mapped into gateway errors."""

from __future__ import annotations

import pytest

from services.providers.anthropic.adapter import adapter
from shared.errors import GatewayError, ProviderError
from tests.unit.adapter_io import fixture

MODEL = "claude-sonnet-4-5"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"",
        b'{"id": "msg_1", "type": "message"}',
        b'{"content": "hello"}',
        b'{"content": [{"text": "no type"}]}',
        fixture("anthropic/error_overloaded.json"),
    ],
)
def test_a_malformed_success_body_is_a_provider_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        adapter.parse_response(body, provider="claude-eu", model=MODEL)
    error = caught.value
    assert (error.http_status, error.code, error.is_retryable) == (502, "provider_bad_response", False)
    assert error.where == "provider:claude-eu" and error.message.startswith("claude-eu: ")


# --- parse_error ---------------------------------------------------------------------------------


def error(status: int, body: bytes, headers: dict[str, str] | None = None) -> GatewayError:
    return adapter.parse_error(status, body, headers or {}, provider="anthropic")


def test_529_overloaded_is_retryable_unavailable() -> None:
    reply = error(529, fixture("anthropic/error_overloaded.json"), {"retry-after": "7"}).to_reply()
    assert (reply.status, reply.code, reply.retryable, reply.retry_after) == (
        503,
        "provider_overloaded",
        True,
        7.0,
    )
    assert reply.message == "anthropic: Overloaded" and reply.where == "provider:anthropic"


def test_429_recorded_rate_limit_is_retryable_after_the_advertised_delay() -> None:
    reply = error(429, fixture("anthropic/error_rate_limit.json"), {"retry-after": "30"}).to_reply()
    assert (reply.status, reply.type, reply.code) == (429, "rate_limit_error", "rate_limit_error")
    assert reply.retryable is True and reply.retry_after == 30.0
    assert "rate limit of 20,000,000 prompt bytes per hour" in reply.message


def test_400_keeps_anthropic_error_type_as_code() -> None:
    reply = error(400, fixture("anthropic/error_invalid_request.json")).to_reply()
    assert (reply.status, reply.type, reply.code, reply.retryable) == (
        400,
        "invalid_request_error",
        "invalid_request_error",
        False,
    )
    assert reply.message == 'anthropic: messages: roles must alternate between "user" and "assistant"'


def test_401_is_our_credential_so_the_caller_sees_502() -> None:
    reply = error(401, fixture("anthropic/error_authentication.json")).to_reply()
    assert (reply.status, reply.code, reply.retryable) == (502, "provider_auth_failed", False)
    assert reply.message == "anthropic: invalid x-api-key"


def test_404_not_found() -> None:
    reply = error(404, fixture("anthropic/error_not_found.json")).to_reply()
    assert (reply.status, reply.code) == (404, "not_found_error")
    assert reply.message == "anthropic: The requested resource could not be found."


def test_500_api_error_is_retryable() -> None:
    reply = error(500, fixture("anthropic/error_api_error.json")).to_reply()
    assert (reply.status, reply.code, reply.retryable) == (502, "provider_error", True)
    assert reply.message == "anthropic: Internal server error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<html><title>504 Gateway Time-out</title></html>",
            "<html><title>504 Gateway Time-out</title></html>",
        ),
        (b"x" * 300, "x" * 200),
        (b"", "HTTP 529 with an empty body"),
        (
            b'{"type": "error", "error": {"type": "overloaded_error"}}',
            '{"type": "error", "error": {"type": "overloaded_error"}}',
        ),
    ],
)
def test_unexpected_error_bodies_still_give_a_message(body: bytes, message: str) -> None:
    reply = error(529, body).to_reply()
    assert reply.message == f"anthropic: {message}"
    assert (reply.status, reply.retryable) == (503, True)
