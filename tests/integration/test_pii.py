"""PII redaction end to end, through real services and the official SDKs: what the mock upstream receives
(never the test prompt's email or card number), what the client gets back in each mode, streams split
mid-placeholder included, in chat completions, Messages and Responses alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from tests.infra import Nats
from tests.integration.test_request_path import eventually
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, error_body, make_config

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"
PROMPT = f"My email is {EMAIL} and my card is {CARD}."
REDACTED = "My email is [EMAIL_1] and my card is [CARD_1]."
NO_CACHE = {"cache-control": "no-cache, no-store"}
SEND = {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}


def route(name: str, provider: str, model: str, pii: str) -> dict[str, Any]:
    return {"name": name, "targets": [{"provider": provider, "model": model}], "pii": pii}


def settings(upstream: MockUpstream) -> dict[str, Any]:
    return {
        "providers": {
            "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
            "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "k"},
            "native": {"adapter": "openai", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        },
        "models": [
            route("chat-redact", "up", "gpt-4o-mini", "redact"),
            route("chat-restore", "up", "gpt-4o-mini", "redact_restore"),
            route("chat-block", "up", "gpt-4o-mini", "block"),
            route("claude-restore", "claude", "claude-sonnet-4-5", "redact_restore"),
            route("claude-block", "claude", "claude-sonnet-4-5", "block"),
            route("responses-restore", "native", "gpt-4o", "redact_restore"),
        ],
        "router": {"retry": {"attempts": 1}},
    }


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    stack = await Stack(make_config(nats_server.url, **settings(upstream))).start()
    yield stack
    await stack.close()


def anthropic_client(stack: Stack, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.url, api_key=api_key, max_retries=0)


def upstream_saw(upstream: MockUpstream, *values: str) -> bool:
    """Whether any call the upstream received holds any of `values` (in any JSON string of its body)."""
    bodies = [json.dumps(r["body"]) for r in upstream.requests]
    assert bodies, "the upstream was never called"
    digits = [re.sub(r"\D", "", v) for v in values if re.sub(r"\D", "", v)]
    return any(v in body for body in bodies for v in values) or any(
        d in re.sub(r"\D", "", body) for body in bodies for d in digits if len(d) >= 12)


async def test_redact_sends_placeholders_and_answers_with_them(stack: Stack, upstream: MockUpstream) -> None:
    answer = await stack.openai().chat.completions.create(
        model="chat-redact", messages=[{"role": "user", "content": PROMPT}])
    assert answer.choices[0].message.content == f"Echo: {REDACTED}"
    assert not upstream_saw(upstream, EMAIL, CARD)
    assert upstream.requests[-1]["body"]["messages"][-1]["content"] == REDACTED


async def test_restore_gives_the_values_back(stack: Stack, upstream: MockUpstream) -> None:
    answer = await stack.openai().chat.completions.create(
        model="chat-restore", messages=[{"role": "user", "content": PROMPT}], extra_headers=NO_CACHE)
    assert answer.choices[0].message.content == f"Echo: {PROMPT}"
    assert not upstream_saw(upstream, EMAIL, CARD)


async def test_restore_in_a_stream_split_mid_placeholder(stack: Stack, upstream: MockUpstream) -> None:
    upstream.chunks = 40  # a character or two a chunk: every placeholder arrives in pieces
    stream = await stack.openai().chat.completions.create(
        model="chat-restore", messages=[{"role": "user", "content": PROMPT}], stream=True, extra_headers=NO_CACHE)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == f"Echo: {PROMPT}"
    assert not any("[EMAIL" in p or "[CARD" in p for p in pieces)
    assert len([p for p in pieces if p]) > 10  # it really was a stream of small pieces
    assert not upstream_saw(upstream, EMAIL, CARD)


async def test_restore_in_tool_call_arguments_and_redact_in_tool_results(
    stack: Stack, upstream: MockUpstream
) -> None:
    sdk = stack.openai()
    call = f'mock:call send_email {{"to": "{EMAIL}"}}'
    answer = await sdk.chat.completions.create(
        model="chat-restore", messages=[{"role": "user", "content": call}], tools=[SEND], extra_headers=NO_CACHE)
    tool_call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(tool_call.function.arguments) == {"to": EMAIL}  # type: ignore[union-attr]
    stream = await sdk.chat.completions.create(
        model="chat-restore", messages=[{"role": "user", "content": call}], tools=[SEND], stream=True,
        extra_headers=NO_CACHE)
    arguments = "".join([d.function.arguments or "" async for c in stream if c.choices
                         for d in c.choices[0].delta.tool_calls or () if d.function is not None])
    assert json.loads(arguments) == {"to": EMAIL}
    await sdk.chat.completions.create(model="chat-restore", extra_headers=NO_CACHE, tools=[SEND], messages=[
        {"role": "user", "content": call},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "send_email", "arguments": json.dumps({"to": EMAIL})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"Sent; charged to {CARD}"},
    ])
    assert not upstream_saw(upstream, EMAIL, CARD)
    last = upstream.requests[-1]["body"]["messages"]
    assert json.loads(last[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "[EMAIL_1]"}
    assert last[2]["content"] == "Sent; charged to [CARD_1]"


async def test_block_refuses_and_names_the_kinds(stack: Stack, upstream: MockUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await stack.openai().chat.completions.create(model="chat-block", messages=[{"role": "user", "content": PROMPT}])
    error = error_body(refused.value)  # the SDK keeps the `error` object
    assert error["code"] == "pii_detected" and error["type"] == "invalid_request_error"
    assert "card, email" in error["message"]
    assert EMAIL not in error["message"] and "4111" not in error["message"]
    with pytest.raises(anthropic.BadRequestError) as messages_refused:
        await anthropic_client(stack).messages.create(
            model="claude-block", max_tokens=50, messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    body = error_body(messages_refused.value)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "email" in body["error"]["message"] and EMAIL not in body["error"]["message"]
    assert upstream.stats["calls"] == 0
    answer = await stack.openai().chat.completions.create(
        model="chat-block", messages=[{"role": "user", "content": "Nothing personal here."}])
    assert answer.choices[0].message.content == "Echo: Nothing personal here."


async def test_messages_native_body_is_redacted_and_restored(stack: Stack, upstream: MockUpstream) -> None:
    sdk = anthropic_client(stack)
    messages = [{"role": "user", "content": PROMPT}]
    message = await sdk.messages.create(model="claude-restore", max_tokens=200, messages=messages,
                                        extra_headers=NO_CACHE)
    assert message.content[0].type == "text" and message.content[0].text == f"Echo: {PROMPT}"
    upstream.chunks = 40
    async with sdk.messages.stream(model="claude-restore", max_tokens=200, messages=messages,
                                   extra_headers=NO_CACHE) as stream:
        final = await stream.get_final_message()
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", f"Echo: {PROMPT}")]
    assert not upstream_saw(upstream, EMAIL, CARD)
    assert all(r["url"].endswith("/v1/messages") for r in upstream.requests)  # Anthropic's own API, native body


async def test_responses_api_is_redacted_and_restored(stack: Stack, upstream: MockUpstream) -> None:
    sdk = stack.openai()
    response = await sdk.responses.create(model="responses-restore", input=PROMPT, extra_headers=NO_CACHE)
    assert response.output_text == f"Echo: {PROMPT}"
    upstream.chunks = 40
    async with sdk.responses.stream(model="responses-restore", input=PROMPT, extra_headers=NO_CACHE) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == f"Echo: {PROMPT}" == final.output_text
    # The stored turn is the client's: its next turn sends the values again, redacted again.
    await sdk.responses.create(model="responses-restore", input="And again?", previous_response_id=response.id,
                               extra_headers=NO_CACHE)
    assert not upstream_saw(upstream, EMAIL, CARD)
    assert all(r["url"].endswith("/v1/responses") for r in upstream.requests)


async def test_a_cached_answer_holds_placeholders_and_each_request_gets_its_own_values(
    stack: Stack, upstream: MockUpstream
) -> None:
    first = await stack.http.post("/v1/chat/completions", json={
        "model": "chat-restore", "messages": [{"role": "user", "content": PROMPT}]})
    l1 = stack.apps[0].gateway.l1
    assert l1 is not None
    await eventually(lambda: len(l1) == 1)  # the answer's cache fill reached the ingress
    other = PROMPT.replace(EMAIL, "someone.else@example.org")
    second = await stack.http.post("/v1/chat/completions", json={
        "model": "chat-restore", "messages": [{"role": "user", "content": other}]})
    assert first.headers["x-llm-edge-cache"] == "miss"
    assert second.headers["x-llm-edge-cache"] != "miss"  # the same redacted request: one upstream call
    assert first.json()["choices"][0]["message"]["content"] == f"Echo: {PROMPT}"
    assert second.json()["choices"][0]["message"]["content"] == f"Echo: {other}"
    assert upstream.stats["calls"] == 1
    assert not upstream_saw(upstream, EMAIL, "someone.else@example.org", CARD)


def detections(text: str, kind: str, mode: str) -> float:
    match = re.search(rf'^llm_edge_pii_detections_total{{kind="{kind}",mode="{mode}"}} (\S+)$', text, re.M)
    return 0.0 if match is None else float(match.group(1))


async def test_detections_are_counted_by_kind_and_mode_and_never_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    before = (await stack.http.get("/metrics")).text
    caplog.set_level("DEBUG")
    await stack.openai().chat.completions.create(
        model="chat-redact", messages=[{"role": "user", "content": f"{PROMPT} Again: {EMAIL}."}],
        extra_headers=NO_CACHE)
    after = (await stack.http.get("/metrics")).text
    assert detections(after, "email", "redact") - detections(before, "email", "redact") == 1  # one distinct value
    assert detections(after, "card", "redact") - detections(before, "card", "redact") == 1
    assert EMAIL not in caplog.text and CARD not in caplog.text


async def test_a_keys_mode_applies_to_its_requests(nats_server: Nats, upstream: MockUpstream) -> None:
    keys = [{"name": name, "sha256": hashlib.sha256(name.encode()).hexdigest(), **fields}
            for name, fields in (("restoring", {"pii": "redact_restore"}), ("plain", {}))]
    config = make_config(nats_server.url, **settings(upstream), keys=keys)
    stack = await Stack(config).start()
    try:
        restored = await stack.openai(api_key="restoring").chat.completions.create(
            model="up/gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
        assert restored.choices[0].message.content == f"Echo: {PROMPT}"
        assert not upstream_saw(upstream, EMAIL, CARD)
        plain = await stack.openai(api_key="plain").chat.completions.create(
            model="up/gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
        assert plain.choices[0].message.content == f"Echo: {PROMPT}"
        assert upstream_saw(upstream, EMAIL)  # pii off for this key: the control that the check can fail
    finally:
        await stack.close()


async def test_a_key_created_through_the_admin_api_carries_its_mode(nats_server: Nats, upstream: MockUpstream) -> None:
    admin = "sk-admin-0123456789abcdef"
    config = make_config(nats_server.url, **settings(upstream), admin={"key_sha256": hashlib.sha256(
        admin.encode()).hexdigest()})
    stack = await Stack(config).start()
    try:
        created = await stack.http.post("/admin/keys", json={"name": "bot", "pii": "redact_restore"},
                                        headers={"authorization": f"Bearer {admin}"})
        assert created.status_code == 201 and created.json()["pii"] == "redact_restore"
        answer = await stack.openai(api_key=created.json()["key"]).chat.completions.create(
            model="up/gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
        assert answer.choices[0].message.content == f"Echo: {PROMPT}"
        assert not upstream_saw(upstream, EMAIL, CARD)
        changed = await stack.http.patch("/admin/keys/bot", json={"pii": "block"},
                                         headers={"authorization": f"Bearer {admin}"})
        assert changed.json()["pii"] == "block"
        client = stack.openai(api_key=created.json()["key"])

        async def refused() -> bool:  # once the change has reached this replica's watch of the key store
            try:
                await client.chat.completions.create(
                    model="up/gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
            except openai.BadRequestError as exc:
                return bool(error_body(exc)["code"] == "pii_detected")
            return False

        await eventually(refused)
        assert not upstream_saw(upstream, EMAIL, CARD)
    finally:
        await stack.close()
