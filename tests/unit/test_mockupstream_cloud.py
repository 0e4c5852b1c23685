"""The mock upstream's Gemini and Bedrock dialects on the wire, read with a plain HTTP client: routes, content
types, framing (Gemini's CRLF SSE, Bedrock's binary event stream) and error bodies as those APIs send them.
(Azure's routes are checked with the official SDK in test_mockupstream.py.)"""

from __future__ import annotations

import json

import httpx

from services.providers.bedrock.eventstream import EventStreamDecoder
from tests.mockupstream.server import MockUpstream

GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
BEDROCK_BODY = {"messages": [{"role": "user", "content": [{"text": "hello there"}]}]}


async def test_gemini_answer_stream_and_error(upstream: MockUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as http:
        r = await http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI_BODY)
        assert r.status_code == 200
        body = r.json()
        assert body["candidates"][0]["content"] == {"parts": [{"text": "Echo: hello there"}], "role": "model"}
        assert body["candidates"][0]["finishReason"] == "STOP" and body["modelVersion"] == "gemini-2.5-flash"
        assert body["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}

        r = await http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=GEMINI_BODY)
        assert r.headers["content-type"].startswith("text/event-stream")
        events = r.content.split(b"\r\n\r\n")
        assert events[-1] == b"" and all(e.startswith(b"data: ") for e in events[:-1])
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
        assert text == "Echo: hello there"
        assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"

        upstream.script([{"status": 429}])
        r = await http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI_BODY)
        assert r.status_code == 429
        error = r.json()["error"]
        assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
        assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"


async def test_bedrock_answer_event_stream_and_error(upstream: MockUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as http:
        r = await http.post("/model/amazon.nova-lite-v1:0/converse", json=BEDROCK_BODY)
        assert r.status_code == 200
        body = r.json()
        assert body["output"]["message"] == {"role": "assistant", "content": [{"text": "Echo: hello there"}]}
        assert body["stopReason"] == "end_turn"
        assert body["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}

        r = await http.post("/model/amazon.nova-lite-v1:0/converse-stream", json=BEDROCK_BODY)
        assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
        messages = EventStreamDecoder().messages(r.content)
        assert {m.headers[":message-type"] for m in messages} == {"event"}
        kinds = [m.headers[":event-type"] for m in messages]
        assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
        assert set(kinds[1:-3]) == {"contentBlockDelta"}
        text = "".join(json.loads(m.payload)["delta"]["text"] for m in messages[1:-3])
        assert text == "Echo: hello there"

        upstream.script([{"status": 429}])
        r = await http.post("/model/amazon.nova-lite-v1:0/converse", json=BEDROCK_BODY)
        assert r.status_code == 429
        assert r.headers["x-amzn-errortype"].startswith("ThrottlingException:")
        assert r.json() == {"message": "Too many requests, please wait before trying again."}
