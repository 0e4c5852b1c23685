"""Amazon Bedrock's Converse API as the mock speaks it: `/model/{modelId}/converse` (JSON) and
`/model/{modelId}/converse-stream` (AWS's binary event stream, `application/vnd.amazon.eventstream`), errors
as `{"message": …}` with the type in `x-amzn-ErrorType`. And InvokeModel for Anthropic's models:
`/model/{modelId}/invoke` answers Anthropic's Message object, `/invoke-with-response-stream` its events, each
as the base64 `bytes` of a `chunk` event; the body must carry `anthropic_version` and no `model`.

After docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
API_runtime_ConverseStream.html and the event-stream framing botocore decodes (prelude, string headers,
payload, CRC32s). The encoder here is written apart from the gateway's decoder on purpose: the decoder is
pinned by botocore's test vectors.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import msgspec

from tests.mockupstream.formats import (
    DIALECTS,
    Dialect,
    Message,
    Plan,
    Stream,
    encode,
    plan,
    reason,
    split,
)

_PREFIX = b"/model/"
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"  # Bedrock pads event payloads with `p`


class _Block(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_result: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    role: str = "user"
    content: list[_Block] = []


class _Text(msgspec.Struct):
    text: str = ""


class _Spec(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct, rename="camel"):
    tool_spec: _Spec | None = None


class _ToolConfig(msgspec.Struct):
    tools: list[_Tool] = []


class _Request(msgspec.Struct, rename="camel"):
    messages: list[_Message] = []
    system: list[_Text] = []
    tool_config: _ToolConfig | None = None


_decoder = msgspec.json.Decoder(_Request)


def matches(path: bytes) -> bool:
    return path.startswith(_PREFIX) and path.endswith(
        (b"/converse", b"/converse-stream", b"/invoke", b"/invoke-with-response-stream"))


class _Invoke(msgspec.Struct):
    anthropic_version: str
    model: None = None  # Bedrock takes the model from the URL only


_invoke_decoder = msgspec.json.Decoder(_Invoke)
_MESSAGES = DIALECTS[b"/v1/messages"]


def _plan(url: bytes, body: bytes) -> Plan:
    path = url.split(b"?", 1)[0]
    model, _, operation = path[len(_PREFIX) :].decode().rpartition("/")
    if operation.startswith("invoke"):
        _invoke_decoder.decode(body)
        p = _MESSAGES.plan(url, body)
        return replace(p, model=unquote(model), stream=operation == "invoke-with-response-stream", native=True)
    r = _decoder.decode(body)
    messages = []
    for m in r.messages:
        text = " ".join(b.text for b in m.content if b.text)
        answered = any(b.tool_result is not None for b in m.content)
        messages.append(Message(role="tool" if answered and not text else m.role, content=text))
    tools = [t.tool_spec.name for t in (r.tool_config.tools if r.tool_config else ()) if t.tool_spec]
    system = " ".join(t.text for t in r.system)
    return plan(unquote(model), messages, system, operation == "converse-stream", True, tools)


def _usage(p: Plan) -> dict[str, int]:
    return {
        "inputTokens": p.prompt_tokens,
        "outputTokens": p.completion_tokens,
        "totalTokens": p.prompt_tokens + p.completion_tokens,
    }


def _body(p: Plan, seq: int) -> bytes:
    if p.native:
        return _MESSAGES.body(p, seq)
    if p.tool is None:
        content: list[dict[str, Any]] = [{"text": p.text}]
    else:
        content = [{"toolUse": {"toolUseId": f"tooluse_mock{seq}", "name": p.tool, "input": p.tool_input()}}]
    return encode(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if p.tool else "end_turn",
            "usage": _usage(p),
            "metrics": {"latencyMs": 1},
        }
    )


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude with its CRC, string headers, payload, message CRC."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, encode({**payload, "p": _PADDING[: 1 + len(kind)]}))


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, encode({"message": message}))


def _chunks(frames: list[bytes]) -> list[bytes]:
    """Anthropic's SSE events as InvokeModel streams them: the JSON of each, base64, in a `chunk` event."""
    data = [line[6:] for frame in frames for line in frame.split(b"\n") if line.startswith(b"data: ")]
    return [event("chunk", {"bytes": base64.b64encode(d).decode()}) for d in data]


def _stream(p: Plan, seq: int, chunks: int) -> Stream:
    if p.native:
        head, content, tail = _MESSAGES.stream(p, seq, chunks)
        return _chunks(head), _chunks(content), _chunks(tail)
    head = [event("messageStart", {"role": "assistant"})]
    if p.tool is None:
        content = [
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            for piece in split(p.text, chunks)
        ]
    else:
        start = {"toolUse": {"toolUseId": f"tooluse_mock{seq}", "name": p.tool}}
        head.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        content = [
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}})
            for piece in split(p.arguments, chunks)
        ]
    tail = [
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": "tool_use" if p.tool else "end_turn"}),
        event("metadata", {"usage": _usage(p), "metrics": {"latencyMs": 1}}),
    ]
    return head, content, tail


# status -> (x-amzn-ErrorType's type, message), after the Converse API reference's error list.
_ERRORS = {
    400: ("ValidationException", "The provided model identifier is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "The request took too long to process."),
    424: ("ModelErrorException", "The request failed due to an error while processing the model."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}


def error(status: int, message: str | None, seq: int) -> bytes:
    return encode({"message": message or _ERRORS.get(status, ("", reason(status)))[1]})


def error_headers(status: int) -> dict[str, str]:
    kind = _ERRORS.get(status, ("InternalServerException", ""))[0]
    return {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}


DIALECT = Dialect(
    _plan,
    _body,
    _stream,
    error,
    stream_type=b"application/vnd.amazon.eventstream",
    error_headers=error_headers,
)
