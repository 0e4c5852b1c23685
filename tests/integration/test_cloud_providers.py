"""Azure OpenAI, Gemini and Bedrock through the whole gateway: the official `openai` SDK against the
ingress, each provider's worker calling the mock upstream in that provider's wire format. Each case checks
what a client sees (text, usage, streaming) and what the provider saw (URL, auth header, body).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from services.providers.bedrock.sigv4 import Credentials, sign
from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

NO_CACHE = {"cache-control": "no-cache, no-store"}


@dataclass(frozen=True)
class Case:
    provider: dict[str, Any]  # the provider's configuration, `{url}` standing for the mock's address
    model: str  # the target model (deployment, model id)
    path: str  # the URL the provider must be called at (stream: `stream_path`)
    stream_path: str
    auth: tuple[str, str]  # header name (lower case), how its value starts
    prompt: str  # where the prompt text sits in the body the provider received
    model_at: str | None = None  # where the model sits in that body, if it is there

    def config(self, url: str) -> dict[str, Any]:
        return {k: v.replace("{url}", url) if isinstance(v, str) else v for k, v in self.provider.items()}


CASES = {
    "azure": Case(
        provider={"adapter": "azure", "base_url": "{url}", "api_key": "azure-key"},
        model="prod-gpt4o",
        path="/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        stream_path="/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        auth=("api-key", "azure-key"),
        prompt="messages.0.content",
    ),
    "azure-v1": Case(
        provider={"adapter": "azure", "base_url": "{url}", "api_key": "azure-key", "api_version": "v1"},
        model="prod-gpt4o",
        path="/openai/v1/chat/completions",
        stream_path="/openai/v1/chat/completions",
        auth=("api-key", "azure-key"),
        prompt="messages.0.content",
        model_at="model",  # the v1 route names the deployment in the body
    ),
    "gemini": Case(
        provider={"adapter": "gemini", "base_url": "{url}", "api_key": "gemini-key"},
        model="gemini-2.5-flash",
        path="/v1beta/models/gemini-2.5-flash:generateContent",
        stream_path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        auth=("x-goog-api-key", "gemini-key"),
        prompt="contents.0.parts.0.text",
    ),
    "bedrock": Case(
        provider={"adapter": "bedrock", "base_url": "{url}", "api_key": "bedrock-api-key"},
        model="anthropic.claude-3-haiku-20240307-v1:0",
        path="/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        stream_path="/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        auth=("authorization", "Bearer bedrock-api-key"),
        prompt="messages.0.content.0.text",
    ),
    "bedrock-sigv4": Case(
        provider={
            "adapter": "bedrock",
            "base_url": "{url}",
            "region": "us-west-2",
            "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        },
        model="anthropic.claude-3-haiku-20240307-v1:0",
        path="/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        stream_path="/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        auth=("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        prompt="messages.0.content.0.text",
    ),
}


def dig(body: Any, path: str) -> Any:
    for key in path.split("."):
        body = body[int(key)] if isinstance(body, list) else body[key]
    return body


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream, case: Case) -> AsyncIterator[Stack]:
    config = make_config(
        nats_server.url,
        providers={"cloud": case.config(upstream.url), "mock": {}},
        models=[
            {
                "name": "cloud-then-mock",
                "targets": [
                    {"provider": "cloud", "model": case.model},
                    {"provider": "mock", "model": "mock"},
                ],
            }
        ],
        router={"retry": {"attempts": 2, "backoff_base_seconds": 0.01}},
    )
    stack = await Stack(config).start()
    yield stack
    await stack.close()


async def test_answer_with_usage_and_the_provider_saw_its_own_format(
    stack: Stack, upstream: MockUpstream, case: Case
) -> None:
    reply = await stack.openai().chat.completions.create(
        model=f"cloud/{case.model}",
        messages=[{"role": "user", "content": "hello there cloud"}],
        extra_headers=NO_CACHE,
    )
    assert reply.choices[0].message.content == "Echo: hello there cloud"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == 7
    stats = upstream.stats
    assert stats["last_url"] == case.path
    assert stats["last_headers"][case.auth[0]].startswith(case.auth[1])
    assert dig(stats["last_request"], case.prompt) == "hello there cloud"
    if case.model_at is not None:
        assert dig(stats["last_request"], case.model_at) == case.model


async def test_stream_with_usage_equals_the_answer(stack: Stack, upstream: MockUpstream, case: Case) -> None:
    client = stack.openai()
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model=f"cloud/{case.model}",
            messages=[{"role": "user", "content": "stream this to me please"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=NO_CACHE,
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this to me please"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 6)
    assert upstream.stats["last_url"] == case.stream_path
    assert upstream.stats["last_headers"][case.auth[0]].startswith(case.auth[1])


async def test_429_is_retried_on_the_same_target(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "0"}}])
    assert stack.http is not None
    response = await stack.http.post(
        "/v1/chat/completions",
        headers=NO_CACHE,
        json={"model": "cloud-then-mock", "messages": [{"role": "user", "content": "retry"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-llm-edge-provider"] == "cloud"
    assert response.json()["choices"][0]["message"]["content"] == "Echo: retry"
    assert upstream.stats["calls"] == 2


async def test_429_twice_falls_back_to_the_next_target(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "0"}}] * 2)
    assert stack.http is not None
    response = await stack.http.post(
        "/v1/chat/completions",
        headers=NO_CACHE,
        json={"model": "cloud-then-mock", "messages": [{"role": "user", "content": "fall back"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-llm-edge-provider"] == "mock"
    assert upstream.stats["calls"] == 2


async def test_a_rate_limited_stream_is_a_429_for_the_client(
    stack: Stack, upstream: MockUpstream, case: Case
) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "0"}}] * 2)
    with pytest.raises(openai.RateLimitError):
        stream = await stack.openai().chat.completions.create(
            model=f"cloud/{case.model}",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_headers=NO_CACHE,
        )
        async for _ in stream:
            pass


WEATHER_TOOL: Any = {  # the SDK's TypedDict, as JSON
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_round_trip(stack: Stack, case: Case, stream: bool) -> None:
    client = stack.openai()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in await client.chat.completions.create(
            model=f"cloud/{case.model}",
            messages=messages,
            tools=[WEATHER_TOOL],
            stream=True,
            extra_headers=NO_CACHE,
        ):
            for part in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += part.id or ""
                call["name"] += part.function.name or "" if part.function else ""
                call["arguments"] += part.function.arguments or "" if part.function else ""
            finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
        [(call_id, name, arguments)] = [(c["id"], c["name"], c["arguments"]) for c in calls.values()]
    else:
        reply = await client.chat.completions.create(
            model=f"cloud/{case.model}", messages=messages, tools=[WEATHER_TOOL], extra_headers=NO_CACHE
        )
        finish = reply.choices[0].finish_reason
        [tool_call] = reply.choices[0].message.tool_calls or []
        assert isinstance(tool_call, ChatCompletionMessageFunctionToolCall)
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert finish == "tool_calls" and name == "get_weather" and call_id
    assert json.loads(arguments) == {"location": "Paris"}
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 22}'},
    ]
    final = await client.chat.completions.create(
        model=f"cloud/{case.model}", messages=messages, tools=[WEATHER_TOOL], extra_headers=NO_CACHE
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "Echo: What is the weather in Paris?"


async def test_a_provider_dying_mid_stream_ends_the_stream_with_an_error(
    stack: Stack, upstream: MockUpstream, case: Case
) -> None:
    upstream.script([{"status": 200, "fail_after_chunks": 2}])
    body = {
        "model": f"cloud/{case.model}",
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five six"}],
    }
    assert stack.http is not None
    async with stack.http.stream("POST", "/v1/chat/completions", json=body, headers=NO_CACHE) as response:
        assert response.status_code == 200
        raw = (await response.aread()).decode()
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"  # chunks reached the client
    assert "error" in json.loads(events[-1])


async def test_the_sigv4_signature_holds_for_the_request_as_it_arrived(
    nats_server: Nats, upstream: MockUpstream
) -> None:
    """What AWS checks: the signature recomputed from the received method, path, signed headers and body."""
    config = make_config(nats_server.url, providers={"cloud": CASES["bedrock-sigv4"].config(upstream.url)})
    stack = await Stack(config).start()
    try:
        reply = await stack.openai().chat.completions.create(
            model="cloud/anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": "sign"}],
        )
        assert reply.choices[0].message.content == "Echo: sign"
    finally:
        await stack.close()
    received = upstream.stats["last_headers"]
    names = received["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert names == ["content-type", "host", "x-amz-date"]
    when = datetime.strptime(received["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    body = upstream.last_body
    assert body is not None
    expected = sign(
        "POST",
        f"http://{received['host']}{upstream.stats['last_url']}",
        {"content-type": received["content-type"]},
        body,
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region="us-west-2",
        service="bedrock",
        now=when,
    )
    assert received["authorization"] == expected["Authorization"]


EXTRAS: dict[
    str, dict[str, Any]
] = {  # a vendor extra each provider documents, sent with the SDK's extra_body
    "azure": {"data_sources": [{"type": "azure_search", "parameters": {"index_name": "docs"}}]},
    "azure-v1": {"data_sources": [{"type": "azure_search", "parameters": {"index_name": "docs"}}]},
    "gemini": {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]},
    "bedrock": {"additionalModelRequestFields": {"top_k": 40}},
    "bedrock-sigv4": {"guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}},
}


async def test_vendor_extras_reach_the_provider(stack: Stack, upstream: MockUpstream, case: Case) -> None:
    name = next(k for k, v in CASES.items() if v is case)
    allow_list = name.startswith(("gemini", "bedrock"))  # Azure, like OpenAI, takes every extra
    reply = await stack.openai().chat.completions.create(
        model=f"cloud/{case.model}",
        messages=[{"role": "user", "content": "extras"}],
        extra_body=EXTRAS[name] | ({"not_a_field_anywhere": 1} if allow_list else {}),
        extra_headers=NO_CACHE,
    )
    assert reply.choices[0].message.content == "Echo: extras"
    sent = upstream.stats["last_request"]
    for key, value in EXTRAS[name].items():
        assert sent[key] == value
    if allow_list:
        assert "not_a_field_anywhere" not in sent
