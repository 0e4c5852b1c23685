"""OpenAI's own Responses API as an upstream, for clients that spoke it (`ChatRequest.responses_body`): the
body goes out as the client wrote it (model, stream and `store: false` set here), and the answer comes back
as the unified result plus the upstream's output items whole, so reasoning items survive the round trip.

Function calls are told to the unified side the way the ingress names them (`namespace__name`; a custom
tool's input as `{"input": …}` arguments), so a Responses client gets back exactly its own items.
"""

from __future__ import annotations

import time
import uuid

import msgspec
from msgspec import Struct

from services.providers.base import Delta, StreamSummary, bad_response, stream_truncated
from shared.errors import GatewayError, ProviderError, RateLimited
from shared.messages import (
    ChatResult,
    Choice,
    CompletionTokensDetails,
    FunctionCall,
    FunctionCallDelta,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_json = msgspec.json.Encoder()
_FALSE, _TRUE = msgspec.Raw(b"false"), msgspec.Raw(b"true")


def upstream_body(responses_body: bytes, model: str, *, stream: bool) -> bytes:
    fields = _fields.decode(responses_body)
    fields["model"] = msgspec.Raw(_json.encode(model))
    fields["store"] = _FALSE  # the gateway keeps the conversation; nothing is left at the provider
    if stream:
        fields["stream"] = _TRUE
    else:
        fields.pop("stream", None)
    return _json.encode(fields)


# --- what we read of the answer -------------------------------------------------------------------


class _Part(Struct):
    type: str = ""
    text: str = ""
    refusal: str = ""


class _Item(Struct):
    type: str = ""
    id: str = ""
    call_id: str = ""
    name: str = ""
    namespace: str | None = None
    arguments: str = ""
    input: str = ""
    content: list[_Part] | None = None


class _InputDetails(Struct):
    cached_tokens: int = 0


class _OutputDetails(Struct):
    reasoning_tokens: int = 0


class _Usage(Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Incomplete(Struct):
    reason: str | None = None


class _Error(Struct):
    code: str | None = None
    message: str = ""


class _Response(Struct):
    id: str = ""
    created_at: float = 0
    model: str = ""
    status: str = "completed"
    output: list[msgspec.Raw] = []
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None
    error: _Error | None = None


_response = msgspec.json.Decoder(_Response)
_item = msgspec.json.Decoder(_Item)


def usage_of(usage: _Usage | None) -> Usage:
    if usage is None:
        return Usage()
    cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0
    reasoning = usage.output_tokens_details.reasoning_tokens if usage.output_tokens_details else 0
    return Usage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens,
                 total_tokens=usage.total_tokens or usage.input_tokens + usage.output_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning))


def _name(item: _Item) -> str:
    return f"{item.namespace}__{item.name}" if item.namespace else item.name


def _arguments(item: _Item) -> str:
    return item.arguments if item.type == "function_call" else _json.encode({"input": item.input}).decode()


def finish_reason(response: _Response, calls: bool) -> str:
    if response.status == "incomplete":
        reason = response.incomplete_details.reason if response.incomplete_details else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def parse_response(body: bytes, *, provider: str, model: str) -> ChatResult:
    try:
        response = _response.decode(body)
        items = [_item.decode(raw) for raw in response.output]
    except msgspec.DecodeError as exc:
        raise bad_response(provider, str(exc)) from exc
    text = "".join(p.text for i in items if i.type == "message" for p in i.content or () if p.type == "output_text")
    refusal = "".join(p.refusal for i in items if i.type == "message" for p in i.content or () if p.type == "refusal")
    calls = [ToolCall(id=i.call_id, function=FunctionCall(name=_name(i), arguments=_arguments(i)))
             for i in items if i.type in ("function_call", "custom_tool_call")]
    message = ResponseMessage(content=text or None, tool_calls=calls or msgspec.UNSET, refusal=refusal or None)
    return ChatResult(
        id=response.id or f"resp_{uuid.uuid4().hex}",
        created=int(response.created_at) or int(time.time()),
        model=response.model or model,
        choices=[Choice(index=0, message=message, finish_reason=finish_reason(response, bool(calls)))],
        usage=usage_of(response.usage),
        provider=provider,
        target_model=model,
        responses_output=_json.encode(response.output),
    )


# --- the event stream -----------------------------------------------------------------------------


class _Event(Struct):
    type: str = ""
    item: msgspec.Raw = msgspec.Raw()  # empty when the event has none (Raw takes no `| None`)
    item_id: str = ""
    delta: str = ""
    response: _Response | None = None
    code: str | None = None
    message: str = ""


_event = msgspec.json.Decoder(_Event)


def failure(provider: str, code: str | None, message: str) -> GatewayError:
    where = f"provider:{provider}"
    if code == "rate_limit_exceeded":
        return RateLimited(f"{provider}: {message}", code=code, where=where)
    return ProviderError(f"{provider}: {message or 'the response failed'}", code=code or "provider_error",
                         where=where)


class EventParser:
    """Responses API events -> deltas: text and function-call arguments as they come, a custom tool call
    once whole, any other item (reasoning) whole as `item_json`; `response.completed` ends it."""

    def __init__(self, *, provider: str, model: str) -> None:
        self.provider, self.model = provider, model
        self.calls: dict[str, int] = {}  # upstream item id -> unified tool call index
        self.summary: StreamSummary | None = None

    def feed(self, event: str | None, data: str) -> list[Delta]:
        try:
            ev = _event.decode(data)
        except msgspec.DecodeError as exc:
            raise bad_response(self.provider, f"a stream event is not JSON: {exc}") from exc
        match ev.type:
            case "response.output_text.delta":
                return [Delta(content=ev.delta)] if ev.delta else []
            case "response.output_item.added" if ev.item:
                item = _item.decode(ev.item)
                if item.type != "function_call":
                    return []
                index = self.calls[item.id] = len(self.calls)
                return [Delta(tool_calls=[ToolCallDelta(index=index, id=item.call_id, type="function",
                                                        function=FunctionCallDelta(name=_name(item), arguments=""))])]
            case "response.function_call_arguments.delta" if ev.item_id in self.calls:
                return [Delta(tool_calls=[ToolCallDelta(index=self.calls[ev.item_id],
                                                        function=FunctionCallDelta(arguments=ev.delta))])]
            case "response.output_item.done" if ev.item:
                return self._done(ev.item)
            case "response.completed" | "response.incomplete" if ev.response is not None:
                response = ev.response
                self.summary = StreamSummary(
                    id=response.id, model=response.model or self.model, created=int(response.created_at),
                    finish_reason=finish_reason(response, bool(self.calls)), usage=usage_of(response.usage))
                return []
            case "response.failed":
                error = ev.response.error if ev.response is not None else None
                raise failure(self.provider, error.code if error else None, error.message if error else "")
            case "error":
                raise failure(self.provider, ev.code, ev.message)
        return []

    def _done(self, raw: msgspec.Raw) -> list[Delta]:
        item = _item.decode(raw)
        match item.type:
            case "message" | "function_call":
                return []  # already told, piece by piece
            case "custom_tool_call":
                index = self.calls[item.id or item.call_id] = len(self.calls)
                return [Delta(tool_calls=[ToolCallDelta(index=index, id=item.call_id, type="function",
                                                        function=FunctionCallDelta(name=_name(item),
                                                                                   arguments=_arguments(item)))])]
        return [Delta(item_json=bytes(raw))]

    def end(self) -> StreamSummary:
        if self.summary is None:
            raise stream_truncated(self.provider, "response.completed")
        return self.summary
