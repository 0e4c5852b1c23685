"""The mock upstream speaks OpenAI's and Anthropic's wire formats well enough for their own SDKs to parse them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest

from tests.mockupstream.server import MockUpstream

OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there big world"}]


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    server = MockUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def oai(upstream: MockUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(upstream: MockUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=upstream.url, api_key="x", max_retries=0)
    yield client
    await client.close()


async def test_openai_completion_echoes_the_last_user_message(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-mock", messages=HELLO)  # type: ignore[arg-type]

    assert r.id.startswith("chatcmpl-mock-") and r.object == "chat.completion" and r.model == "gpt-mock"
    assert r.choices[0].message.content == "Echo: hello there big world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 5, 11)


async def test_openai_stream_has_role_chunk_content_chunks_finish_and_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-mock",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(pieces) == 8 and "".join(p or "" for p in pieces) == "Echo: hello there big world"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert {c.id for c in chunks} == {chunks[0].id}


async def test_openai_tool_call(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-mock",
        messages=[{"role": "user", "content": "What is the weather like?"}],
        tools=[OPENAI_TOOL],  # type: ignore[list-item]
    )

    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"location": "Paris"}  # type: ignore[union-attr]


async def test_openai_tool_call_streamed_in_argument_fragments(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-mock",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[OPENAI_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    fragments, finish = 0, None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        finish = chunk.choices[0].finish_reason or finish
        for tc in delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            call["name"] += (tc.function and tc.function.name) or ""
            call["arguments"] += (tc.function and tc.function.arguments) or ""
            fragments += 1

    assert finish == "tool_calls" and fragments > 2
    assert calls[0]["id"].startswith("call_mock_") and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}


async def test_a_tool_result_turn_is_answered_with_text(oai: openai.AsyncOpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    r = await oai.chat.completions.create(
        model="gpt-mock",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[OPENAI_TOOL],  # type: ignore[list-item]
    )

    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == "Echo: weather?"


async def test_anthropic_message(claude: anthropic.AsyncAnthropic) -> None:
    m = await claude.messages.create(
        model="claude-mock",
        max_tokens=64,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )

    assert m.id.startswith("msg_mock_") and m.type == "message" and m.role == "assistant"
    assert m.model == "claude-mock" and m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.content[0].type == "text" and m.content[0].text == "Echo: hello there"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (4, 3)


async def test_anthropic_stream_follows_the_documented_event_flow(claude: anthropic.AsyncAnthropic) -> None:
    stream = await claude.messages.create(
        model="claude-mock", max_tokens=64, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    types = [event.type async for event in stream]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 8,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops `ping`

    async with claude.messages.stream(
        model="claude-mock", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    ) as s:
        final = await s.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Echo: hello"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 2


async def test_anthropic_tool_use_streamed_as_input_json_deltas(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-mock",
        max_tokens=64,
        tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "What's the weather?"}],
    ) as s:
        final = await s.get_final_message()

    block = final.content[0]
    assert final.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "get_weather" and block.input == {"location": "Paris"}
    assert block.id.startswith("toolu_mock_")


async def test_scripted_429_reaches_the_openai_sdk_then_normal_replies_resume(
    upstream: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    upstream.script([{"status": 429, "headers": {"retry-after": "1"}}])

    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "1"
    assert (caught.value.type, caught.value.code) == ("requests", "rate_limit_exceeded")

    r = await oai.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Echo: hello there big world"


async def test_scripted_anthropic_errors_use_anthropic_bodies(
    upstream: MockUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    upstream.script([{"status": 429}, {"status": 529}])
    kwargs = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(**kwargs)  # type: ignore[call-overload]
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await claude.messages.create(**kwargs)  # type: ignore[call-overload]

    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["type"] == "error"  # type: ignore[index]
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_fail_after_chunks_breaks_both_sdk_streams(
    upstream: MockUpstream, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    upstream.script([{"fail_after_chunks": 2}, {"fail_after_chunks": 3}])
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        stream = await oai.chat.completions.create(model="m", messages=HELLO, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Echo: "  # 2 of 8 slices of the 27-char reply

    deltas = 0
    # This SDK lets the transport's error through mid-stream instead of wrapping it.
    with pytest.raises(Exception, match="incomplete chunked read"):
        events = await claude.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for event in events:
            deltas += event.type == "content_block_delta"
    assert deltas == 3


async def test_malformed_200_and_scripted_bodies_are_sent_verbatim(upstream: MockUpstream) -> None:
    html = {"status": 502, "headers": {"Content-Type": "text/html"}, "raw": "<html>bad gateway</html>"}
    upstream.script([{"status": 200, "raw": "not json"}, {"status": 418, "body": {"teapot": True}}, html])
    async with httpx.AsyncClient(base_url=upstream.url) as http:
        first = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        second = await http.post("/v1/messages", json={"model": "m", "messages": []})
        third = await http.post("/v1/messages", json={"model": "m", "messages": []})

    assert (first.status_code, first.text) == (200, "not json")
    assert (second.status_code, second.json()) == (418, {"teapot": True})
    assert (third.status_code, third.text) == (502, "<html>bad gateway</html>")
    assert third.headers.get_list("content-type") == ["text/html"]


async def test_control_plane_over_http_scripts_counts_and_resets(upstream: MockUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.url, headers={"authorization": "Bearer k"}) as http:
        queued = await http.post("/_mock/script", json={"responses": [{"status": 500}]})
        assert queued.json() == {"queued": 1}
        failed = await http.post("/v1/messages", json={"model": "m", "messages": []})
        ok = await http.post("/v1/chat/completions", json={"model": "m2", "messages": []})
        stats = (await http.get("/_mock/stats")).json()
        await http.post("/_mock/reset")
        after = (await http.get("/_mock/stats")).json()

    assert failed.status_code == 500 and failed.json()["error"]["type"] == "api_error"
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "Echo: "
    assert stats["calls"] == 2 and stats["in_flight"] == 0 and stats["disconnects"] == 0
    assert stats["calls_by_path"] == {"/v1/messages": 1, "/v1/chat/completions": 1}
    assert stats["last_request"] == {"model": "m2", "messages": []}
    assert stats["last_headers"]["authorization"] == "Bearer k"
    assert after["calls"] == 0 and after["calls_by_path"] == {} and after["last_request"] is None
    assert upstream.stats == after


async def test_a_timed_fault_answers_every_call_alike_until_it_ends(upstream: MockUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=upstream.url) as http:
        bad = await http.post("/_mock/fault", json={"seconds": 1, "response": {"stauts": 429}})
        set_ = await http.post("/_mock/fault", json={"seconds": 30, "response": {"status": 429}})
        during = [await http.post("/v1/chat/completions", json=body) for _ in range(5)]
        upstream.fault({"status": 503}, seconds=0.0)  # a fault that has already ended
        after = await http.post("/v1/chat/completions", json=body)

    assert bad.status_code == 400 and "stauts" in bad.json()["error"]["message"]
    assert set_.status_code == 200
    assert [r.status_code for r in during] == [429] * 5
    assert during[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "Echo: hi"


async def test_unknown_paths_and_bad_bodies_get_provider_errors(upstream: MockUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as http:
        missing = await http.get("/v1/models")
        bad_openai = await http.post("/v1/chat/completions", content=b"{nope")
        bad_anthropic = await http.post("/v1/messages", json={"messages": "not a list"})

    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "Invalid URL (GET /v1/models)",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert bad_openai.status_code == 400 and bad_openai.json()["error"]["type"] == "invalid_request_error"
    assert bad_anthropic.status_code == 400 and bad_anthropic.json()["type"] == "error"
    assert bad_anthropic.json()["error"]["type"] == "invalid_request_error"


async def test_client_closing_mid_stream_counts_as_a_disconnect() -> None:
    upstream = MockUpstream(chunk_interval_ms=20)
    await upstream.start()
    try:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        async with (
            httpx.AsyncClient(base_url=upstream.url) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            first = await anext(response.aiter_raw())
            assert first.startswith(b"data: ")
        stats = await upstream.wait_for(lambda s: s["disconnects"] >= 1 and s["in_flight"] == 0)
        assert stats["disconnects"] == 1 and stats["calls"] == 1
    finally:
        await upstream.stop()


async def test_latency_holds_concurrent_calls_in_flight() -> None:
    upstream = MockUpstream(latency_ms=50)
    await upstream.start()
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=upstream.url) as http:
            started = time.monotonic()
            replies = await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(5)))
            elapsed = time.monotonic() - started
        assert all(r.status_code == 200 for r in replies) and elapsed >= 0.05
        assert upstream.stats["max_in_flight"] == 5 and upstream.stats["in_flight"] == 0
    finally:
        await upstream.stop()


async def test_pipelined_requests_on_one_connection_are_answered_in_order(upstream: MockUpstream) -> None:
    def request(text: str) -> bytes:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
        return head.encode() + body

    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    upstream.script([{"delay_ms": 20}])  # the first answer is late; the second must still come after it
    writer.write(request("one") + request("two"))
    replies = []
    for _ in range(2):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")
        )
        replies.append(json.loads(await reader.readexactly(length))["choices"][0]["message"]["content"])
    writer.close()
    await writer.wait_closed()

    assert replies == ["Echo: one", "Echo: two"]


async def test_cli_serves_on_uvloop_until_terminated() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mockupstream", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("mock upstream listening on http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=line.split()[-1]) as http:
            r = await http.post(
                "/v1/messages", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            )
        assert r.json()["content"] == [{"type": "text", "text": "Echo: x"}]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_azure_routes_answer_azure_openai_sdk(upstream: MockUpstream) -> None:
    client = openai.AsyncAzureOpenAI(azure_endpoint=upstream.url, api_key="x", api_version="2024-10-21",
                                     max_retries=0)
    r = await client.chat.completions.create(model="my-deployment", messages=HELLO)  # type: ignore[arg-type]
    assert r.model == "my-deployment" and r.choices[0].message.content == "Echo: hello there big world"
    assert upstream.stats["last_url"] == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert upstream.stats["last_headers"]["api-key"] == "x"
    stream = await client.chat.completions.create(model="d", messages=HELLO, stream=True)  # type: ignore[arg-type]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Echo: hello there big world"
    upstream.script([{"status": 400}])
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="d", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "content_filter"
    await client.close()
