"""OpenAI's Responses API at the edge, through real services: the official `openai` SDK's `responses.create`
and `responses.stream` against the gateway, answered by the mock provider and by every adapter's mock upstream
(OpenAI, Anthropic, Azure OpenAI, Gemini, Bedrock); stored responses shared by two ingress replicas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from tests.infra import Nats
from tests.mockupstream.server import MockUpstream
from tests.stack import Stack, make_config

NO_CACHE = {"cache-control": "no-cache, no-store"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather at a place",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                          "required": ["location"]}}
# Every adapter, each behind its mock upstream, plus the built-in mock provider.
MODELS = ["mock", "up/gpt-4o-mini", "claude/claude-sonnet-4-5", "azure/prod-gpt4o", "gemini/gemini-2.5-flash",
          "bedrock/anthropic.claude-3-haiku-20240307-v1:0"]
UPSTREAM_MODELS = MODELS[1:]
_event = pydantic.TypeAdapter(ResponseStreamEvent)


def providers(upstream: MockUpstream) -> dict[str, dict[str, object]]:
    return {
        "mock": {"stream_chunks": 6},
        "up": {"adapter": "openai_compatible", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        "claude": {"adapter": "anthropic", "base_url": upstream.url, "api_key": "k"},
        "azure": {"adapter": "azure", "base_url": upstream.url, "api_key": "k"},
        "gemini": {"adapter": "gemini", "base_url": upstream.url, "api_key": "k"},
        "bedrock": {"adapter": "bedrock", "base_url": upstream.url, "api_key": "k"},
        "dies": {"adapter": "mock", "stream_fail_after": 2},
        "native": {"adapter": "openai", "base_url": f"{upstream.url}/v1", "api_key": "k"},
        "azure-native": {"adapter": "azure", "base_url": upstream.url, "api_key": "k", "api_version": "v1",
                         "responses_api": True},
    }


@pytest.fixture
async def stack(nats_server: Nats, upstream: MockUpstream) -> AsyncIterator[Stack]:
    config = make_config(nats_server.url, providers=providers(upstream), router={"retry": {"attempts": 1}})
    stack = await Stack(config).start()
    yield stack
    await stack.close()


def conversation(upstream: MockUpstream) -> list[tuple[str, str]]:
    """The (role, text) of each message the OpenAI-format upstream last received."""
    found = []
    for m in upstream.stats["last_request"]["messages"]:
        content = m["content"]
        text = content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")
        found.append((m["role"], text))
    return found


@pytest.mark.parametrize("model", MODELS)
async def test_create_answers_in_the_responses_shape(stack: Stack, model: str) -> None:
    raw = await stack.openai().responses.with_raw_response.create(
        model=model, input="Tell me about NATS", instructions="Be brief.", extra_headers=NO_CACHE)
    response = raw.parse()
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.instructions == "Be brief."
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    expected = "Mock reply to: Tell me about NATS" if model == "mock" else "Echo: Tell me about NATS"
    assert response.output_text == expected
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert raw.headers["x-llm-edge-cache"] == "miss" and raw.headers["x-llm-edge-provider"] == model.split("/")[0]


async def test_the_upstream_receives_the_translated_chat_request(stack: Stack, upstream: MockUpstream) -> None:
    await stack.openai().responses.create(
        model="up/gpt-4o-mini", instructions="Be brief.", max_output_tokens=50, temperature=0.5, top_p=0.9,
        user="user-1", metadata={"team": "a"}, reasoning={"effort": "low"},
        input=[{"role": "developer", "content": "Answer in French."},
               {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is NATS?"},
                                                                {"type": "input_image", "image_url": "https://x/y.png"}]}],
        extra_headers=NO_CACHE)
    sent = upstream.stats["last_request"]
    assert upstream.stats["calls_by_path"] == {"/v1/chat/completions": 1}
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "What is NATS?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
    ]
    assert (sent["max_completion_tokens"], sent["temperature"], sent["top_p"], sent["user"]) == (50, 0.5, 0.9, "user-1")
    assert sent["reasoning_effort"] == "low" and "metadata" not in sent


@pytest.mark.parametrize("model", UPSTREAM_MODELS)
async def test_function_call_round_trip(stack: Stack, model: str) -> None:
    sdk = stack.openai()
    first = await sdk.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                                       extra_headers=NO_CACHE)
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == {"location": "Paris"}
    second = await sdk.responses.create(
        model=model, tools=[WEATHER], extra_headers=NO_CACHE,
        input=[{"role": "user", "content": "What is the weather in Paris?"}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}])
    assert second.status == "completed" and second.output_text.startswith("Echo: ")


@pytest.mark.parametrize("model", MODELS)
async def test_stream_events_validate_in_order(stack: Stack, model: str) -> None:
    sdk = stack.openai()
    whole = await sdk.responses.create(model=model, input="Tell me about streams", extra_headers=NO_CACHE)
    events: list[Any] = []
    async with sdk.responses.stream(model=model, input="Tell me about streams", extra_headers=NO_CACHE) as stream:
        async for event in stream:
            events.append(event)
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert kinds.count("response.output_text.delta") > 1
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == whole.output_text and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]


@pytest.mark.parametrize("model", UPSTREAM_MODELS)
async def test_streamed_function_call_arrives_whole(stack: Stack, model: str) -> None:
    async with stack.openai().responses.stream(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                                               extra_headers=NO_CACHE) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"location": "Paris"}
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]


async def test_every_raw_event_validates_against_the_sdk_types(stack: Stack) -> None:
    body = {"model": "up/gpt-4o", "input": "What is the weather in Paris?", "tools": [WEATHER], "stream": True}
    response = await stack.http.post("/v1/responses", json=body, headers=NO_CACHE)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    for block in blocks:
        name, data = block.split("\n", 1)
        event = _event.validate_python(json.loads(data.removeprefix("data: ")))
        assert name == f"event: {event.type}"


@pytest.mark.parametrize("model", ["dies/m", "up/gpt-4o"])
async def test_failure_mid_stream_ends_with_response_failed(stack: Stack, upstream: MockUpstream, model: str) -> None:
    upstream.script([{"status": 200, "fail_after_chunks": 2}])
    body = {"model": model, "input": "one two three four five six seven", "stream": True}
    response = await stack.http.post("/v1/responses", json=body)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"]
    upstream.script([{"status": 200, "fail_after_chunks": 2}])
    async with stack.openai().responses.stream(model=model, input="one two three four five six") as stream:
        seen = [event async for event in stream]
        # The SDK hands the failure over as events and never as a final response.
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert seen[-1].type == "response.failed" and seen[-1].response.status == "failed"
    assert seen[-2].type == "error" and seen[-2].message


async def test_previous_response_id_across_two_replicas(stack: Stack, upstream: MockUpstream) -> None:
    other = await stack.add_ingress()
    first = await stack.openai().responses.create(model="up/gpt-4o", input="My name is Ada.", extra_headers=NO_CACHE)
    second = await stack.openai(url=other).responses.create(
        model="up/gpt-4o", input="What is my name?", previous_response_id=first.id, extra_headers=NO_CACHE)
    assert second.previous_response_id == first.id
    assert conversation(upstream) == [
        ("user", "My name is Ada."), ("assistant", "Echo: My name is Ada."), ("user", "What is my name?")]
    again = await stack.openai(url=other).responses.retrieve(first.id)
    assert again.output_text == first.output_text and again.id == first.id
    items = await stack.openai().responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]  # type: ignore[union-attr,index]
    third = await stack.openai().responses.create(
        model="up/gpt-4o", input="And again?", previous_response_id=second.id, extra_headers=NO_CACHE)
    assert len(upstream.stats["last_request"]["messages"]) == 5 and third.status == "completed"


async def test_streamed_response_is_stored_before_it_completes(stack: Stack, upstream: MockUpstream) -> None:
    sdk = stack.openai()
    async with sdk.responses.stream(model="up/gpt-4o", input="Remember: blue.", extra_headers=NO_CACHE) as stream:
        first = await stream.get_final_response()
    second = await sdk.responses.create(model="up/gpt-4o", input="Which colour?", previous_response_id=first.id,
                                        extra_headers=NO_CACHE)
    assert second.status == "completed"
    assert conversation(upstream) == [
        ("user", "Remember: blue."), ("assistant", "Echo: Remember: blue."), ("user", "Which colour?")]
    assert (await sdk.responses.retrieve(first.id)).output_text == first.output_text


async def test_store_false_stores_nothing(stack: Stack) -> None:
    sdk = stack.openai()
    response = await sdk.responses.create(model="mock", input="Forget me", store=False)
    assert response.to_dict().get("store") is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.create(model="mock", input="Next", previous_response_id=response.id)
    async with sdk.responses.stream(model="mock", input="Forget me too", store=False) as stream:
        streamed = await stream.get_final_response()
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(streamed.id)


async def test_delete_removes_a_stored_response(stack: Stack) -> None:
    sdk = stack.openai()
    response = await sdk.responses.create(model="mock", input="Delete me")
    await sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(response.id)


async def test_tenants_never_see_each_others_responses(nats_server: Nats) -> None:
    keys = [{"name": "a", "sha256": _digest("key-a"), "tenant": "team-a"},
            {"name": "b", "sha256": _digest("key-b"), "tenant": "team-b"}]
    stack = await Stack(make_config(nats_server.url, keys=keys)).start()
    try:
        mine = await stack.openai("key-a").responses.create(model="mock", input="secret plans")
        theirs = stack.openai("key-b")
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await theirs.responses.create(model="mock", input="continue", previous_response_id=mine.id)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.delete(mine.id)
        assert (await stack.openai("key-a").responses.retrieve(mine.id)).output_text == mine.output_text
        with pytest.raises(openai.AuthenticationError):
            await stack.openai("wrong").responses.retrieve(mine.id)
    finally:
        await stack.close()


def _digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


async def test_cache_hit_answers_create_and_stream(stack: Stack, upstream: MockUpstream) -> None:
    sdk = stack.openai()
    ask: dict[str, Any] = {"model": "up/gpt-4o", "input": "cache this answer, it should come back in many words"}
    first = await sdk.responses.with_raw_response.create(**ask)
    assert first.headers["x-llm-edge-cache"] == "miss"
    second = await sdk.responses.with_raw_response.create(**ask)
    assert second.headers["x-llm-edge-cache"].startswith("hit")
    assert second.parse().output_text == first.parse().output_text and second.parse().id != first.parse().id
    async with sdk.responses.stream(**ask) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert len(deltas) >= 3 and "".join(deltas) == final.output_text == first.parse().output_text
    assert upstream.stats["calls"] == 1
    follow = await sdk.responses.create(model="up/gpt-4o", input="more", previous_response_id=final.id)
    assert follow.status == "completed"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "mock"}, "input"),
    ({"input": "hi"}, "model"),
    ({"model": "mock", "input": [{"type": "web_search_call", "id": "x"}]}, "input[0].type"),
    ({"model": "mock", "input": [{"type": "message", "role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"model": "mock", "input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]},
     "input[0].content[0].type"),
    ({"model": "mock", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "mock", "input": "hi", "temperature": 7}, "temperature"),
    ({"model": "mock", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "mock", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}},
     "tool_choice"),
    ({"model": "mock", "input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice"),
])
async def test_bad_input_is_a_400_in_openais_shape(stack: Stack, body: dict[str, Any], param: str) -> None:
    response = await stack.http.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'{"model": 3, "input": "x"}'])
async def test_malformed_body_is_a_400(stack: Stack, body: bytes) -> None:
    response = await stack.http.post("/v1/responses", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"]


async def test_unknown_previous_response_is_a_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await stack.openai().responses.create(model="mock", input="hi", previous_response_id="resp_nothing")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "resp_nothing" in caught.value.message
    for path in ("/v1/responses/resp_nothing", "/v1/responses/resp_nothing/input_items", "/v1/responses/../x"):
        response = await stack.http.get(path)
        assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"


async def test_a_dropped_tool_type_of_any_text_is_named_percent_encoded(stack: Stack) -> None:
    # Found by the OpenAPI fuzzer: a type outside Latin-1 made the header unwritable (a 500).
    raw = await stack.openai().responses.with_raw_response.create(
        model="mock", input="hi", tools=[{"type": "wéb_séarch\r\nx-evil: 1"}, {"type": "web_search"}],  # type: ignore[list-item]
        extra_headers=NO_CACHE)
    assert raw.headers["x-llm-edge-dropped-tools"] == "w%C3%A9b_s%C3%A9arch%0D%0Ax-evil%3A%201,web_search"
    assert "x-evil" not in raw.headers


async def test_built_in_tools_are_left_out_and_named(stack: Stack, upstream: MockUpstream) -> None:
    raw = await stack.openai().responses.with_raw_response.create(
        model="up/gpt-4o", input="What is the weather in Paris?",
        tools=[{"type": "web_search"}, WEATHER], extra_headers=NO_CACHE)
    assert raw.headers["x-llm-edge-dropped-tools"] == "web_search"
    assert [t["function"]["name"] for t in upstream.stats["last_request"]["tools"]] == ["get_weather"]
    assert raw.parse().output[0].type == "function_call"


async def test_codex_shaped_request_with_custom_and_namespaced_tools(stack: Stack, upstream: MockUpstream) -> None:
    """What Codex sends: a custom tool with a grammar, a namespace, encrypted reasoning asked for, its
    client metadata; the custom call comes back as a `custom_tool_call` with the free-form input."""
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    upstream.script([{"tool_call": {"name": "apply_patch", "arguments": json.dumps({"input": patch})}}])
    tools = [
        {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}},
        {"type": "namespace", "name": "agents", "description": "Sub-agents",
         "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object", "properties": {}}}]},
    ]
    body = {"model": "up/gpt-4o", "stream": True, "store": False, "tools": tools, "tool_choice": "auto",
            "parallel_tool_calls": True, "reasoning": {"summary": "auto"}, "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "abc", "client_metadata": {"session_id": "s"}, "text": {"verbosity": "low"},
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add a.txt"}]}]}
    response = await stack.http.post("/v1/responses", json=body, headers=NO_CACHE)
    events = [_event.validate_python(json.loads(line[6:])) for line in response.text.splitlines()
              if line.startswith("data: ")]
    done = [e for e in events if e.type == "response.output_item.done"]
    assert len(done) == 1 and done[0].item.type == "custom_tool_call"
    assert (done[0].item.name, done[0].item.input) == ("apply_patch", patch)
    assert events[-1].type == "response.completed"
    sent = upstream.stats["last_request"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["apply_patch", "agents__spawn"]
    assert "lark" in sent["tools"][0]["function"]["description"]
    follow = {**body, "stream": False, "input": [
        *body["input"], done[0].item.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": done[0].item.call_id, "output": "Done!"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call", "call_id": "c2", "name": "spawn", "namespace": "agents", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "spawned"}]}
    second = await stack.http.post("/v1/responses", json=follow, headers=NO_CACHE)
    assert second.status_code == 200, second.text
    messages = upstream.stats["last_request"]["messages"]
    function = messages[1]["tool_calls"][0]["function"]
    assert function["name"] == "apply_patch" and json.loads(function["arguments"]) == {"input": patch}
    assert messages[2] == {"role": "tool", "tool_call_id": done[0].item.call_id, "content": "Done!"}
    assert messages[3]["tool_calls"][0]["function"]["name"] == "agents__spawn"


async def test_namespaced_call_comes_back_with_its_namespace(stack: Stack, upstream: MockUpstream) -> None:
    upstream.script([{"tool_call": {"name": "agents__spawn", "arguments": "{}"}}])
    tools = [{"type": "namespace", "name": "agents", "description": "Sub-agents",
              "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object", "properties": {}}}]}]
    response = await stack.openai().responses.create(model="up/gpt-4o", input="spawn one", tools=tools,  # type: ignore[list-item]
                                                     extra_headers=NO_CACHE)
    (call,) = response.output
    assert call.type == "function_call" and (call.name, call.namespace) == ("spawn", "agents")


async def test_json_schema_format_reaches_the_upstream(stack: Stack, upstream: MockUpstream) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    response = await stack.openai().responses.create(
        model="up/gpt-4o", input="json please", extra_headers=NO_CACHE,
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    assert upstream.stats["last_request"]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert response.text.format.type == "json_schema"  # type: ignore[union-attr]


async def test_wrong_method_and_unknown_paths_speak_openai(stack: Stack) -> None:
    response = await stack.http.put("/v1/responses")
    assert response.status_code == 405 and response.json()["error"]["message"]
    assert isinstance(stack.http, httpx.AsyncClient)


async def test_openai_is_called_natively_and_reasoning_items_survive(stack: Stack, upstream: MockUpstream) -> None:
    """OpenAI has a Responses API of its own: the worker calls it, so the reasoning item (its encrypted
    content included) reaches the client, and goes back upstream on the next turn, by value or by id."""
    sdk = stack.openai()
    first = await sdk.responses.create(model="native/gpt-5", input="What is the weather in Paris?", tools=[WEATHER],
                                       include=["reasoning.encrypted_content"], extra_headers=NO_CACHE)
    assert upstream.stats["calls_by_path"] == {"/v1/responses": 1}
    sent = upstream.stats["last_request"]
    assert (sent["model"], sent["store"], sent["include"]) == ("gpt-5", False, ["reasoning.encrypted_content"])
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.encrypted_content.startswith("enc-mock-")
    assert call.type == "function_call" and json.loads(call.arguments) == {"location": "Paris"}
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens == 3
    items = [i.model_dump(exclude_none=True) for i in first.output]
    second = await sdk.responses.create(
        model="native/gpt-5", tools=[WEATHER], extra_headers=NO_CACHE,
        input=[{"role": "user", "content": "What is the weather in Paris?"}, *items,
               {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}])
    assert second.output_text.startswith("Echo: ")
    assert upstream.stats["last_request"]["input"][1] == items[0]  # the reasoning item, as it came
    third = await sdk.responses.create(model="native/gpt-5", input="Thanks!", previous_response_id=second.id,
                                       extra_headers=NO_CACHE)
    sent_items = upstream.stats["last_request"]["input"]
    assert "previous_response_id" not in upstream.stats["last_request"]
    assert [i.get("type") for i in sent_items][-3:] == ["reasoning", "message", "message"]
    assert sent_items[-3]["encrypted_content"] == second.output[0].encrypted_content  # type: ignore[union-attr]
    assert third.status == "completed"


async def test_azure_with_responses_api_is_called_natively_on_its_v1_route(
    stack: Stack, upstream: MockUpstream
) -> None:
    """Azure OpenAI serves the Responses API too (its v1 route): with `responses_api: true` the worker calls
    it, with Azure's own key header, and the reasoning item comes back as Azure sent it."""
    sdk = stack.openai()
    first = await sdk.responses.create(model="azure-native/gpt-5", input="What is the weather in Paris?",
                                       tools=[WEATHER], include=["reasoning.encrypted_content"],
                                       extra_headers=NO_CACHE)
    assert upstream.stats["calls_by_path"] == {"/openai/v1/responses": 1}
    assert upstream.stats["last_headers"]["api-key"] == "k"
    assert "authorization" not in upstream.stats["last_headers"]
    assert upstream.stats["last_request"]["model"] == "gpt-5"  # the deployment, in the body on the v1 route
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert call.type == "function_call" and json.loads(call.arguments) == {"location": "Paris"}
    async with sdk.responses.stream(model="azure-native/gpt-5", input="Tell me about streams",
                                    extra_headers=NO_CACHE) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "Echo: Tell me about streams"
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert upstream.stats["calls_by_path"] == {"/openai/v1/responses": 2}


async def test_native_stream_passes_reasoning_items_through(stack: Stack, upstream: MockUpstream) -> None:
    async with stack.openai().responses.stream(model="native/gpt-5", input="Tell me about streams",
                                               extra_headers=NO_CACHE) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert upstream.stats["calls_by_path"] == {"/v1/responses": 1} and upstream.stats["last_request"]["stream"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done] == ["reasoning", "message"]
    assert done[0].encrypted_content and done[0].encrypted_content.startswith("enc-mock-")  # type: ignore[union-attr]
    assert final.output_text == "Echo: Tell me about streams"
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert events[-1].type == "response.completed"
    again = await stack.openai().responses.create(model="native/gpt-5", input="more", previous_response_id=final.id,
                                                  extra_headers=NO_CACHE)
    assert again.status == "completed"
    sent = upstream.stats["last_request"]["input"]
    assert [i.get("type") for i in sent] == ["message", "reasoning", "message", "message"]
    assert sent[1]["encrypted_content"] == done[0].encrypted_content  # type: ignore[union-attr]


async def test_built_in_tools_reach_a_provider_that_has_them(stack: Stack, upstream: MockUpstream) -> None:
    raw = await stack.openai().responses.with_raw_response.create(
        model="native/gpt-5", input="Search the web", tools=[{"type": "web_search"}],
        tool_choice={"type": "web_search"}, extra_headers=NO_CACHE)
    assert "x-llm-edge-dropped-tools" not in raw.headers
    sent = upstream.stats["last_request"]
    assert sent["tools"] == [{"type": "web_search"}] and sent["tool_choice"] == {"type": "web_search"}
