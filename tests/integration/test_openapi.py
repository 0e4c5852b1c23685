"""The gateway's own OpenAPI document, and the one app behind it: the body schemas say what the decoders
accept, and a route answers the same whether the edge's shortcut or FastAPI's routing runs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.infra import Nats
from tests.stack import Stack, make_config

BODIES = {
    "/v1/chat/completions": "ChatRequest",
    "/v1/messages": "MessagesRequest",
    "/v1/messages/count_tokens": "MessagesRequest",
    "/v1/responses": "ResponsesRequest",
}


@pytest.fixture(scope="module")
async def stack(nats_server: Nats) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url)).start()
    yield stack
    await stack.close()


@pytest.fixture(scope="module")
async def document(stack: Stack) -> dict[str, Any]:
    response = await stack.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc: dict[str, Any] = response.json()
    return doc


def validator(document: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


async def test_the_document_describes_each_dialects_body(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    for path, component in BODIES.items():
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{component}"}
    chat = document["components"]["schemas"]["ChatRequest"]
    assert set(chat["required"]) == {"model", "messages"}
    # The gateway's own fields of the unified request are not the client's to send.
    assert not {"extra_json", "anthropic", "responses_body"} & set(chat["properties"])
    # The GET routes keep their parameters.
    assert {p["name"] for p in document["paths"]["/v1/responses/{response_id}/input_items"]["get"]["parameters"]} \
        == {"response_id", "order", "limit", "after"}


@pytest.mark.parametrize(("path", "body", "valid"), [
    ("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}],
                              "temperature": 1.5, "max_tokens": 5}, True),
    ("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}],
                              "temperature": 7}, False),
    ("/v1/chat/completions", {"model": "mock", "messages": []}, False),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, False),
    ("/v1/messages", {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, True),
    ("/v1/messages", {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "temperature": 1.5}, False),
    ("/v1/messages/count_tokens", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}, True),
    ("/v1/responses", {"model": "mock", "input": "hi", "max_output_tokens": 5}, True),
    ("/v1/responses", {"model": "mock", "input": 3}, False),
])
async def test_the_body_schemas_say_what_the_gateway_accepts(
    stack: Stack, document: dict[str, Any], path: str, body: dict[str, Any], valid: bool
) -> None:
    """The document is the decoders' own types: a body it allows is answered, one it forbids is a 400."""
    assert validator(document, BODIES[path]).is_valid(body) is valid
    response = await stack.http.post(path, json=body)
    assert response.status_code == (200 if valid else 400), response.text


async def test_fastapi_routing_and_the_shortcut_answer_alike(stack: Stack) -> None:
    """The hot routes run the same code either way: the same answers, the same errors in the same shapes."""
    routed = httpx.AsyncClient(base_url=await stack.add_ingress(direct=False), timeout=30)
    try:
        for path, body in [
            ("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/chat/completions", {"model": "mock", "messages": []}),
            ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/messages", {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/messages", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/responses", {"model": "mock", "input": "hi", "store": False}),
        ]:
            direct, via_fastapi = await stack.http.post(path, json=body), await routed.post(path, json=body)
            assert (direct.status_code, via_fastapi.status_code) in {(200, 200), (400, 400), (404, 404)}
            assert via_fastapi.headers["x-request-id"]
            if direct.status_code == 200:
                assert _answer_text(direct.json()) == _answer_text(via_fastapi.json())
            else:
                assert direct.json().keys() == via_fastapi.json().keys()
                assert direct.json()["error"]["type"] == via_fastapi.json()["error"]["type"]
    finally:
        await routed.aclose()


def _answer_text(body: dict[str, Any]) -> str:
    if "choices" in body:
        return str(body["choices"][0]["message"]["content"])
    if body.get("type") == "message":
        return str(body["content"][0]["text"])
    return str(body["output"][0]["content"][0]["text"])


@pytest.mark.parametrize(("method", "path", "status", "shape"), [
    ("GET", "/v1/chat/completions", 405, "openai"),
    ("GET", "/v1/messages", 405, "anthropic"),
    ("PUT", "/v1/responses", 405, "openai"),
    ("POST", "/v1/nothing-here", 404, "openai"),
    ("POST", "/v1/messages/nothing-here", 404, "anthropic"),
    ("GET", "/v1/responses/resp_1/input_items?limit=many", 400, "openai"),
])
async def test_errors_outside_the_routes_take_the_dialects_shape(
    stack: Stack, method: str, path: str, status: int, shape: str
) -> None:
    response = await stack.http.request(method, path)
    assert response.status_code == status, response.text
    body = response.json()
    if shape == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
