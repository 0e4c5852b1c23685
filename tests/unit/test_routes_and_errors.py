"""Model resolution, the upstream-status table, and errors crossing the bus intact."""

from __future__ import annotations

import msgspec
import pytest

from services.providers.base import error_for_status, retry_after_seconds
from shared.config import Config
from shared.errors import NotFound, from_reply
from shared.messages import ErrorReply, encode, reply_decoder
from shared.routes import Routes


def config(**fields: object) -> Config:
    return msgspec.convert({"providers": {"mock": {}, "openai": {}}} | fields, Config)


def test_configured_route_wins() -> None:
    routes = Routes(config(models=[{"name": "gpt-4o", "targets": [{"provider": "mock", "model": "m"}]}]))
    assert [(t.provider, t.model) for t in routes.resolve("gpt-4o")] == [("mock", "m")]


@pytest.mark.parametrize(
    ("model", "provider", "target"),
    [("gpt-4o", "openai", "gpt-4o"), ("o3-mini", "openai", "o3-mini"), ("openai/my-ft", "openai", "my-ft"),
     ("mock", "mock", "mock")],
)
def test_conventions(model: str, provider: str, target: str) -> None:
    (resolved,) = Routes(config()).resolve(model)
    assert (resolved.provider, resolved.model) == (provider, target)


def test_a_provider_that_is_not_enabled_is_a_404() -> None:
    with pytest.raises(NotFound, match="anthropic"):
        Routes(config()).resolve("claude-3-5-sonnet")
    with pytest.raises(NotFound):
        Routes(config()).resolve("llama-3")


@pytest.mark.parametrize(
    ("status", "client_status", "retryable"),
    [(400, 400, False), (401, 502, False), (403, 502, False), (404, 404, False), (408, 504, True),
     (429, 429, True), (500, 502, True), (502, 502, True), (503, 503, True), (504, 502, True),
     (529, 503, True)],
)
def test_upstream_status_table(status: int, client_status: int, retryable: bool) -> None:
    error = error_for_status(status, "boom", provider="p", headers={})
    assert (error.http_status, error.is_retryable) == (client_status, retryable)


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None


def test_errors_survive_the_bus() -> None:
    sent = error_for_status(429, "slow down", provider="p", headers={"retry-after": "2"}).to_reply()
    received = reply_decoder.decode(encode(sent))
    assert isinstance(received, ErrorReply)
    error = from_reply(received)
    assert (error.http_status, error.error_type, error.code, error.retry_after) == (
        429, "rate_limit_error", "rate_limit_exceeded", 2.0)
