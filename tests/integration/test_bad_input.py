"""Malformed and invalid requests: each gets OpenAI's error shape with the right status, costs no
upstream call, and leaves the gateway healthy for the next request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.infra import Nats
from tests.stack import Stack, make_config

GOOD = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url, ingress={"max_body_bytes": 4096})).start()
    yield stack
    await stack.close()


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"model": "mock", "messages": [', 400, None),
        (b"", 400, None),
        (b"[1, 2, 3]", 400, None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
        (b'{"model": "mock", "messages": []}', 400, "messages"),
        (b'{"model": "mock"}', 400, "messages"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
        (b'{"model": "mock", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "messages[0].role"),
        (b'{"model": "mock", "messages": [{"role": "user", "content": 5}]}', 400, "messages[0].content"),
        (b'{"model": "mock", "messages": "hello"}', 400, "messages"),
        (b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}', 400,
         "temperature"),
        (b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', 400,
         "max_tokens"),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}', 404, "model"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', 404, "model"),
    ],
)
async def test_bad_request_gets_openai_error(stack: Stack, body: bytes, status: int, param: str | None) -> None:
    response = await stack.http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    error = assert_openai_error(response, status, param)
    assert error["type"] == "invalid_request_error"


async def test_oversized_body_is_413(stack: Stack) -> None:
    big = {"model": "mock", "messages": [{"role": "user", "content": "x" * 10_000}]}
    error = assert_openai_error(await stack.http.post("/v1/chat/completions", json=big), 413)
    assert error["code"] == "request_too_large"


async def test_unknown_path_is_an_openai_404(stack: Stack) -> None:
    assert_openai_error(await stack.http.get("/v1/nothing-here"), 404)


async def test_wrong_method_is_405_in_openai_shape(stack: Stack) -> None:
    assert_openai_error(await stack.http.get("/v1/chat/completions"), 405)


async def test_gateway_is_healthy_after_bad_input(stack: Stack) -> None:
    for _ in range(3):
        await stack.http.post("/v1/chat/completions", content=b"{{{{")
    response = await stack.http.post("/v1/chat/completions", json=GOOD)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Mock reply to: hi"
    assert (await stack.http.get("/health")).json()["status"] == "healthy"
