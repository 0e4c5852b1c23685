"""The Gemini API as the mock speaks it: `/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse` (each event one `GenerateContentResponse`, CRLF-framed as Google sends
them, no terminator), and Google's error body `{"error": {"code", "message", "status"}}`. Vertex AI's
`/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:…` takes the same bodies.

After ai.google.dev/api/generate-content and ai.google.dev/gemini-api/docs/troubleshooting.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import msgspec

from tests.mockupstream.formats import (
    Dialect,
    Message,
    Plan,
    Stream,
    encode,
    plan,
    reason,
    split,
)

_PREFIX = b"/v1beta/models/"


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    function_response: dict[str, Any] | None = None


class _Content(msgspec.Struct):
    role: str = "user"
    parts: list[_Part] = []


class _Declaration(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct, rename="camel"):
    function_declarations: list[_Declaration] = []


class _Request(msgspec.Struct, rename="camel"):
    contents: list[_Content] = []
    system_instruction: _Content | None = None
    tools: list[_Tool] | None = None


_decoder = msgspec.json.Decoder(_Request)


_VERTEX_PREFIX = b"/v1/projects/"
_VERTEX_MODELS = b"/publishers/google/models/"
_METHODS = (b":generateContent", b":streamGenerateContent")


def matches(path: bytes) -> bool:
    return (path.startswith(_PREFIX) or vertex_matches(path)) and path.endswith(_METHODS)


def vertex_matches(path: bytes) -> bool:
    """Vertex AI's `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:method`:
    the same request and answer bodies as the Gemini API's."""
    return path.startswith(_VERTEX_PREFIX) and _VERTEX_MODELS in path and path.endswith(_METHODS)


def _plan(url: bytes, body: bytes) -> Plan:
    path, _, query = url.partition(b"?")
    model, _, method = unquote(path.rpartition(b"/models/")[2].decode()).rpartition(":")
    r = _decoder.decode(body)
    messages = []
    for c in r.contents:
        text = " ".join(p.text for p in c.parts if p.text)
        answered = any(p.function_response is not None for p in c.parts)
        role = "tool" if answered and not text else ("assistant" if c.role == "model" else "user")
        messages.append(Message(role=role, content=text))
    system = " ".join(p.text for p in r.system_instruction.parts if p.text) if r.system_instruction else ""
    tools = [d.name for t in r.tools or () for d in t.function_declarations]
    stream = method == "streamGenerateContent" and b"alt=sse" in query
    return plan(model, messages, system, stream, True, tools)


def _usage(p: Plan, *, final: bool) -> dict[str, int]:
    out = p.completion_tokens if final else 0
    return {
        "promptTokenCount": p.prompt_tokens,
        "candidatesTokenCount": out,
        "totalTokenCount": p.prompt_tokens + out,
    }


def _response(
    p: Plan, seq: int, parts: list[dict[str, Any]], finish: str | None, final: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(p, final=final),
        "modelVersion": p.model,
        "responseId": f"mock-gemini-{seq}",
    }


def _body(p: Plan, seq: int) -> bytes:
    parts = [{"functionCall": {"name": p.tool, "args": p.tool_input()}}] if p.tool else [{"text": p.text}]
    return encode(_response(p, seq, parts, "STOP", True))


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + encode(data) + b"\r\n\r\n"


def _stream(p: Plan, seq: int, chunks: int) -> Stream:
    if p.tool is None:
        content = [
            _event(_response(p, seq, [{"text": piece}], None, False)) for piece in split(p.text, chunks)
        ]
    else:
        call = {"functionCall": {"name": p.tool, "args": p.tool_input()}}
        content = [_event(_response(p, seq, [call], None, False))]
    return [], content, [_event(_response(p, seq, [{"text": ""}], "STOP", True))]


_ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: (
        "NOT_FOUND",
        ("models/unknown is not found for API version v1beta, or is not supported for generateContent."),
    ),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: (
        "INTERNAL",
        (
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"
        ),
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


def error(status: int, message: str | None, seq: int) -> bytes:
    kind, text = _ERRORS.get(status, ("UNKNOWN", reason(status)))
    detail: dict[str, Any] = {"code": status, "message": message or text, "status": kind}
    if status == 429:
        detail["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]
    return encode({"error": detail})


DIALECT = Dialect(_plan, _body, _stream, error)
