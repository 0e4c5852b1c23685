"""Large requests and answers (issue #15, item 4): up to `ingress.max_body_bytes` they work on both
dialects, over it they get a 413 in the dialect's shape, and a body the bus cannot carry as one message
is a 413 too, never a 500. The nats-server runs with the configuration `llm-edge up` ships (48 MB)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.infra import Nats
from tests.stack import Stack, make_config

LIMIT = 20 * 1024 * 1024  # the documented default


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url, cache={"enabled": False})).start()
    yield stack
    await stack.close()


def exactly(size: int, path: str) -> bytes:
    """A valid body of exactly `size` bytes whose user text fills the room."""
    shell: dict[str, object] = {"model": "mock", "messages": [{"role": "user", "content": ""}]}
    if path == "/v1/messages":
        shell["max_tokens"] = 10**9  # the mock cuts its echo at max_tokens
    empty = json.dumps(shell).encode()
    body = json.dumps(shell | {"messages": [{"role": "user", "content": "x" * (size - len(empty))}]}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_body_at_the_limit_is_answered_in_full(stack: Stack, path: str) -> None:
    assert stack.http is not None
    response = await stack.http.post(path, content=exactly(LIMIT, path), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    answer = response.json()
    text = answer["choices"][0]["message"]["content"] if "choices" in answer else answer["content"][0]["text"]
    assert len(text) > LIMIT - 100  # the mock echoes the text: the answer is as large as the request


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_body_over_the_limit_is_a_413(stack: Stack, path: str) -> None:
    assert stack.http is not None
    response = await stack.http.post(path, content=exactly(LIMIT + 1, path),
                                     headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["type"] in ("invalid_request_error", "request_too_large")


async def test_body_larger_than_the_bus_carries_is_a_413(nats_server: Nats) -> None:
    """An operator raised max_body_bytes beyond the bus's max_payload: those bodies get a 413 saying why."""
    stack = await Stack(make_config(nats_server.url, ingress={"max_body_bytes": 63 << 20})).start()
    try:
        assert stack.http is not None
        response = await stack.http.post("/v1/chat/completions", content=exactly(50 << 20, "/v1/chat/completions"),
                                         headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text[:300]
        assert "message bus" in response.json()["error"]["message"]
        small = await stack.http.post("/v1/chat/completions", json={"model": "mock", "messages": [
            {"role": "user", "content": "still fine"}]})
        assert small.status_code == 200
    finally:
        await stack.close()
