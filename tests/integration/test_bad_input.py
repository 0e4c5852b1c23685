"""Malformed and invalid requests: each gets OpenAI's error shape with the right status, costs no
upstream call, and leaves the gateway healthy for the next request.
"""

from __future__ import annotations

import logging
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


# --- inputs that gave a 500 (issue #15, item 5) -------------------------------------------------------


@pytest.fixture(scope="module")
async def roomy(nats_server: Nats) -> AsyncIterator[Stack]:
    """The default body limit (20 MiB), so that deep nesting is what the gateway meets, not the size."""
    stack = await Stack(make_config(nats_server.url)).start()
    yield stack
    await stack.close()


MESSAGES_GOOD = {"model": "mock", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
DEEP = b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
BIG = str(2**64 + 1)


def _with(body: dict, extra: str) -> bytes:  # type: ignore[type-arg]
    """`body` as JSON with `extra` (raw JSON text, `"name": value`) spliced in."""
    import json

    return json.dumps(body)[:-1].encode() + b", " + extra.encode() + b"}"


HOSTILE = [
    pytest.param(DEEP, id="nested-1000-deep-extra"),
    pytest.param(_with(GOOD, '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
                       + '{"a": ' * 990 + "1" + "}" * 990 + "}}]"), id="nested-1000-deep-schema"),
    pytest.param(_with(GOOD, f'"seed": {BIG}'), id="seed-beyond-64-bits"),
    pytest.param(_with(GOOD, f'"max_tokens": {BIG}'), id="max-tokens-beyond-64-bits"),
    pytest.param(_with(GOOD, f'"seed": -{BIG}'), id="negative-seed-beyond-64-bits"),
    pytest.param(_with(GOOD, '"response_format": {"type": "json_schema", "json_schema": {"name": "s", '
                       f'"schema": {{"type": "integer", "maximum": {BIG}}}}}}}'), id="int-beyond-64-bits-in-schema"),
    pytest.param(_with(GOOD, '"na\xffme": 1').replace(b"\xc3\xbf", b"\xff"), id="invalid-utf8-field-name"),
    pytest.param(_with(GOOD, '"seed": 1e400'), id="float-overflow-seed"),
]


@pytest.mark.parametrize("body", HOSTILE)
async def test_hostile_chat_input_is_a_400(roomy: Stack, body: bytes) -> None:
    response = await roomy.http.post("/v1/chat/completions", content=body,
                                     headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"


MESSAGES_HOSTILE = [
    pytest.param(b'{"model": "mock", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], '
                 b'"metadata": {"user_id": ' + b"[" * 1000 + b"]" * 1000 + b"}}", id="nested-1000-deep"),
    pytest.param(_with(MESSAGES_GOOD, '"tools": [{"name": "f", "input_schema": ' + '{"a": ' * 990 + "1"
                       + "}" * 990 + "}]"), id="nested-1000-deep-schema"),
    pytest.param(_with({k: v for k, v in MESSAGES_GOOD.items() if k != "max_tokens"}, f'"max_tokens": {BIG}'),
                 id="max-tokens-beyond-64-bits"),
    pytest.param(_with(MESSAGES_GOOD, '"tools": [{"name": "f", "input_schema": {"type": "object", "properties": '
                       f'{{"n": {{"type": "integer", "minimum": {BIG}}}}}}}}}]'), id="int-beyond-64-bits-in-schema"),
    pytest.param(_with(MESSAGES_GOOD, '"na\xffme": 1').replace(b"\xc3\xbf", b"\xff"), id="invalid-utf8-field-name"),
]


@pytest.mark.parametrize("body", MESSAGES_HOSTILE)
async def test_hostile_messages_input_is_a_400(roomy: Stack, body: bytes) -> None:
    response = await roomy.http.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_client_leaving_mid_body_is_no_error(
    stack: Stack, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends half its body and hangs up is not a failure of the gateway: counted as 499
    (client closed request), nothing logged as an error, no 5xx counted, nothing written back."""
    import asyncio
    import time

    from prometheus_client import REGISTRY

    def count(prefix: str) -> float:
        return sum(sample.value for metric in REGISTRY.collect() if metric.name == "llm_edge_requests"
                   for sample in metric.samples
                   if sample.name == "llm_edge_requests_total" and sample.labels["status"].startswith(prefix))

    errors, gone = count("5"), count("499")
    host, port = stack.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 3000\r\n\r\n".encode() + b'{"model": "mock", "messages": [')
    await writer.drain()
    writer.write_eof()  # the client hangs up mid-body
    assert await reader.read() == b""  # and gets nothing back
    writer.close()
    deadline = time.monotonic() + 10
    while count("499") == gone:  # the gateway notices on its own schedule; poll for it, bounded
        assert time.monotonic() < deadline, "the disconnect was never accounted"
        await asyncio.sleep(0.01)
    assert count("5") == errors
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert (await stack.http.post("/v1/chat/completions", json=GOOD)).status_code == 200
