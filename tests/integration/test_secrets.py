"""Configured secrets never leave the gateway (issue #15, item 7): an upstream that echoes the credential it
was sent, in an error body or in an error event inside a stream, reaches the client with the credential
replaced by `[redacted]`, on both dialects; log lines are redacted the same way."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator

import pytest

from shared import secrets
from shared.logs import JsonFormatter
from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

KEY = "sk-live-4f9c2a7b1e8d6f3a"
ORG = "org-Q7xTr2LmP9"
ECHO = f"Incorrect API key provided: {KEY}. You sent 'Authorization: Bearer {KEY}' for organization {ORG}."


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, cache={"enabled": False}, providers={
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": KEY,
               "headers": {"OpenAI-Organization": ORG}},
    }, models=[{"name": "echoing", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
        router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def assert_clean(text: str) -> None:
    assert KEY not in text and ORG not in text, text
    assert KEY[:12] not in text  # not even a prefix of it survived
    assert secrets.REDACTED in text, text


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_an_echoed_key_in_an_error_body_is_redacted(stack: Stack, upstream: MockUpstream, status: int) -> None:
    assert stack.http is not None
    upstream.script([{"status": status, "body": {"error": {"message": ECHO, "type": "invalid_request_error"}}}])
    response = await stack.http.post("/v1/chat/completions", json={
        "model": "echoing", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code >= 400
    assert_clean(response.text)


async def test_an_echoed_key_on_the_messages_api_is_redacted(stack: Stack, upstream: MockUpstream) -> None:
    assert stack.http is not None
    upstream.script([{"status": 400, "body": {"error": {"message": ECHO, "type": "invalid_request_error"}}}])
    response = await stack.http.post("/v1/messages", json={
        "model": "echoing", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert_clean(response.text)


async def test_an_echoed_key_in_a_stream_error_event_is_redacted(stack: Stack, upstream: MockUpstream) -> None:
    assert stack.http is not None
    event = json.dumps({"error": {"message": ECHO, "type": "server_error", "code": None}})
    upstream.script([{"status": 200, "headers": {"content-type": "text/event-stream"},
                      "raw": f"data: {event}\n\n"}])
    async with stack.http.stream("POST", "/v1/chat/completions", json={
            "model": "echoing", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
        text = (await response.aread()).decode()
    assert_clean(text)


async def test_an_echoed_key_before_a_stream_started_is_redacted(stack: Stack, upstream: MockUpstream) -> None:
    assert stack.http is not None
    upstream.script([{"status": 401, "body": {"error": {"message": ECHO, "type": "invalid_request_error"}}}])
    response = await stack.http.post("/v1/chat/completions", json={
        "model": "echoing", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    assert_clean(response.text)


def test_log_lines_are_redacted() -> None:
    config = make_config("nats://127.0.0.1:4222", providers={
        "up": {"adapter": "openai_compatible", "api_key": KEY, "headers": {"OpenAI-Organization": ORG}}},
        cache={"redis_url": "redis://:r3dis-pa55word@127.0.0.1:6379/0"})
    formatter = JsonFormatter("test", secrets.configured(config))
    try:
        raise RuntimeError(f"upstream said: {ECHO}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.WARNING, __file__, 1, "failed: %s (redis r3dis-pa55word)",
                                   (ECHO,), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert_clean(line["msg"])
    assert "r3dis-pa55word" not in line["msg"]
    assert_clean(line["exc"])
