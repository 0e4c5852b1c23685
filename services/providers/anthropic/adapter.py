"""Anthropic's Messages API: the unified request translated to `POST /v1/messages` and the answer back.

Translation is data where it can be (stop reasons, tool choices); the message walk merges same-role
turns because Anthropic requires user and assistant to alternate. Stream events are turned into deltas in
`anthropic_stream.py`, with this module's tables.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.anthropic.settings import AnthropicSettings
from services.providers.base import (
    HttpCall,
    StreamDecoder,
    StreamParser,
    bad_response,
    body_snippet,
    context_window_exceeded,
    error_for_status,
    mentions,
    merge_headers,
)
from services.providers.parts import data_url, map_parts, tool_arguments, turns
from services.providers.sse import SSEDecoder
from shared.errors import GatewayError, InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ChatResult,
    Choice,
    ContentPart,
    DocumentPart,
    FunctionCall,
    Message,
    PromptTokensDetails,
    ResponseMessage,
    ThinkingBlock,
    TokenCount,
    ToolCall,
    ToolChoiceFunction,
    Usage,
)

log = logging.getLogger("llm_edge.provider.anthropic")

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often leave it out

FINISH_REASONS = {  # anything else, or none at all, reads as "stop"
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}

# --- the request body ----------------------------------------------------------------------------


class _Text(Struct, tag="text", tag_field="type"):
    text: str


class _Base64Source(Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class _URLSource(Struct, tag="url", tag_field="type"):
    url: str


class _Image(Struct, tag="image", tag_field="type"):
    source: _Base64Source | _URLSource


class _PlainTextSource(Struct, tag="text", tag_field="type"):
    media_type: str
    data: str


class _Document(Struct, tag="document", tag_field="type"):
    source: _Base64Source | _URLSource | _PlainTextSource


class _ToolUse(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, msgspec.Raw]


class _ToolResult(Struct, tag="tool_result", tag_field="type", omit_defaults=True):
    tool_use_id: str
    content: str | list[_Text | _Image | _Document] | UnsetType = UNSET


_Block = _Text | _Image | _Document | _ToolUse | _ToolResult


class _Turn(Struct):
    role: Literal["user", "assistant"]
    content: list[_Block]


class _Tool(Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any]  # a JSON Schema, passed through as the client wrote it
    description: str | UnsetType = UNSET


class _ToolChoice(Struct, omit_defaults=True):
    type: str
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class _Request(Struct, omit_defaults=True):
    model: str
    max_tokens: int
    messages: list[_Turn]
    system: str | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    tools: list[_Tool] | UnsetType = UNSET
    tool_choice: _ToolChoice | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET


# --- the response and error bodies ---------------------------------------------------------------


class _ContentBlock(Struct):
    # One loose shape for every block type, so new kinds (server tools' blocks) are skipped, not fatal.
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"{}")  # kept as sent: it becomes the tool call's arguments text
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None  # a redacted thinking block's
    citations: msgspec.Raw = msgspec.Raw()  # a text block's sources (empty when absent)

    @property
    def cited(self) -> bool:
        return bytes(self.citations) not in (b"", b"null", b"[]")


class CacheCreation(Struct):
    """The prompt-cache writes by TTL (`cache_creation_input_tokens` is their sum)."""

    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class MessageUsage(Struct):
    # None, not 0, when absent: a stream's `message_delta` sends only the counts that changed.
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None


class _Reply(Struct):
    content: list[msgspec.Raw]  # each decoded as a `_ContentBlock`; a server tool's block is kept as sent
    id: str = ""
    model: str = ""
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: MessageUsage | None = None


class _ErrorDetail(Struct):
    type: str = ""
    message: str = ""


class _Count(Struct):
    input_tokens: int


class _ErrorBody(Struct):
    error: _ErrorDetail


# How Anthropic words a prompt that does not fit the model (a 400 `invalid_request_error`, no code of its
# own): "prompt is too long: 208310 tokens > 200000 maximum", and, counting `max_tokens` in, "input length
# and `max_tokens` exceed context limit: 178959 + 64000 > 200000, ..." (tests/fixtures/anthropic/).
CONTEXT_OVERFLOW = ("prompt is too long", "exceed context limit")

_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(_Reply)
_block_decoder = msgspec.json.Decoder(_ContentBlock)
# The blocks the unified answer models; any other kind is a server's block (see `ResponseMessage`).
_MODELED = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_count_decoder = msgspec.json.Decoder(_Count)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_error_decoder = msgspec.json.Decoder(_ErrorBody)


class AnthropicAdapter:
    name = "anthropic"
    settings = AnthropicSettings
    default_base_url = "https://api.anthropic.com"

    def build_request(self, request: ChatRequest, model: str, config: AnthropicSettings) -> HttpCall:
        return self._call(request, model, config, stream=False)

    def build_stream_request(self, request: ChatRequest, model: str, config: AnthropicSettings) -> HttpCall:
        return self._call(request, model, config, stream=True)

    def build_count_request(self, request: ChatRequest, model: str, config: AnthropicSettings) -> HttpCall:
        """`POST /v1/messages/count_tokens`: the client's own count body when it spoke the Messages API."""
        params = request.anthropic
        if isinstance(params, AnthropicParams):
            body = _native_body(params.body, model, None)
        else:
            full = _fields_decoder.decode(self._body(request, model, stream=False))
            body = _encoder.encode({k: v for k, v in full.items() if k in _COUNTED})
        return self._http(body, "/v1/messages/count_tokens", params, config)

    def parse_count(self, body: bytes, *, provider: str, model: str) -> TokenCount:
        try:
            count = _count_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise bad_response(provider, str(exc)) from exc
        return TokenCount(input_tokens=count.input_tokens, provider=provider, model=model)

    def _call(self, request: ChatRequest, model: str, config: AnthropicSettings, *, stream: bool) -> HttpCall:
        params = request.anthropic
        if isinstance(params, AnthropicParams):
            # A Messages client: its body as sent (thinking, cache_control, context_management, betas' fields).
            body = _native_body(params.body, model, True if stream else None)
        else:
            body = self._body(request, model, stream=stream)
        return self._http(body, "/v1/messages", params, config)

    def _http(self, body: bytes, path: str, params: AnthropicParams | UnsetType, config: AnthropicSettings) -> HttpCall:
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        query = ""
        if isinstance(params, AnthropicParams):
            if isinstance(params.version, str):
                headers["anthropic-version"] = params.version
            if betas := allowed_betas(params.betas, config.anthropic_betas):
                headers["anthropic-beta"] = ",".join(betas)
            query = "?beta=true" if params.beta_query else ""
        secret = set(config.headers)  # operator-supplied headers often carry credentials
        if config.api_key is not None:
            headers["x-api-key"] = config.api_key
            secret.add("x-api-key")
        base_url = (config.base_url or self.default_base_url).rstrip("/")
        return HttpCall(
            method="POST",
            url=f"{base_url}{path}{query}",
            headers=merge_headers(headers, config.headers),
            body=body,
            secret_headers=frozenset(secret),
        )

    def _body(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        if isinstance(request.n, int) and request.n > 1:
            raise InvalidRequest("anthropic: n > 1 is not supported", param="n", code="unsupported_parameter")
        system, turns = _turns(request.messages)
        tools = [
            _Tool(
                name=t.function.name,
                input_schema=t.function.parameters
                if isinstance(t.function.parameters, dict)
                else {"type": "object", "properties": {}},
                description=t.function.description,
            )
            for t in request.tools or ()
        ]
        body = _Request(
            model=model,
            max_tokens=request.max_output_tokens() or DEFAULT_MAX_TOKENS,
            messages=turns,
            system="\n\n".join(system) if system else UNSET,
            temperature=_number(request.temperature),
            top_p=_number(request.top_p),
            stop_sequences=request.stop_list() or UNSET,
            tools=tools or UNSET,
            tool_choice=_tool_choice(request, has_tools=bool(tools)),
            metadata={"user_id": request.user} if isinstance(request.user, str) else UNSET,
            stream=True if stream else UNSET,
        )
        return _encoder.encode(body)

    def parse_response(self, body: bytes, *, provider: str, model: str) -> ChatResult:
        try:
            reply = _reply_decoder.decode(body)
            content = [_block_decoder.decode(raw) for raw in reply.content]
        except msgspec.DecodeError as exc:
            raise bad_response(provider, str(exc)) from exc
        texts = [b.text for b in content if b.type == "text" and b.text is not None]
        thinking = [_thinking_block(b) for b in content if b.type in ("thinking", "redacted_thinking")]
        server = [bytes(raw) for raw, b in zip(reply.content, content, strict=True) if b.type not in _MODELED]
        whole = _encoder.encode(reply.content) if server or any(b.cited for b in content) else UNSET
        calls = [
            ToolCall(
                id=b.id or "", function=FunctionCall(name=b.name or "", arguments=bytes(b.input).decode())
            )
            for b in content
            if b.type == "tool_use"
        ]
        message = ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or UNSET,
                                  thinking=thinking or UNSET, server_blocks=server or UNSET,
                                  content_json=whole)
        finish_reason = FINISH_REASONS.get(reply.stop_reason or "", "stop")
        return ChatResult(
            id=reply.id or f"msg_{uuid.uuid4().hex}",
            created=int(time.time()),  # Anthropic does not say when; now is when we got it
            model=reply.model or model,
            choices=[Choice(index=0, message=message, finish_reason=finish_reason)],
            usage=unified_usage(reply.usage or MessageUsage()),
            provider=provider,
            target_model=model,
            stop_sequence=reply.stop_sequence if reply.stop_reason == "stop_sequence" else None,
        )

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        try:
            detail = _error_decoder.decode(body).error
        except msgspec.DecodeError:
            detail = _ErrorDetail()
        return error_from_detail(status, detail.type, detail.message or body_snippet(status, body), headers,
                                 provider=provider)

    def stream_decoder(self) -> StreamDecoder:
        return SSEDecoder()

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        # Imported here because the parser builds on this module's tables; cheap once loaded.
        from services.providers.anthropic.stream import EventParser

        return EventParser(provider=provider, model=model)


def _thinking_block(block: _ContentBlock) -> ThinkingBlock:
    if block.type == "redacted_thinking":
        return ThinkingBlock(type="redacted_thinking", data=block.data or "")
    return ThinkingBlock(thinking=block.thinking or "", signature=block.signature or "")


# What `count_tokens` takes of a translated request (it refuses sampling parameters and `max_tokens`).
_COUNTED = frozenset({"model", "messages", "system", "tools", "tool_choice"})


def _native_body(body: bytes, model: str, stream: bool | None) -> bytes:
    """The client's Messages body for the target's model; `stream` as the worker calls (the client's own
    choice was removed at the edge). Every other field goes as the client wrote it."""
    fields = _fields_decoder.decode(body)
    fields["model"] = msgspec.Raw(_encoder.encode(model))
    if stream is not None:
        fields["stream"] = msgspec.Raw(b"true" if stream else b"false")
    return _encoder.encode(fields)


def allowed_betas(betas: list[str], allowed: list[str] | None) -> list[str]:
    """The client's `anthropic-beta` values that the provider's allow-list lets through (all, when it has
    none); the others are dropped, and said at debug."""
    if allowed is None or "*" in allowed:
        return betas
    kept = [b for b in betas if b in allowed]
    if len(kept) < len(betas):
        log.debug("betas not on the allow-list dropped: %s", ", ".join(b for b in betas if b not in allowed))
    return kept


def _turns(messages: list[Message]) -> tuple[list[str], list[_Turn]]:
    """System prompts apart; the rest as alternating turns, consecutive same-role messages merged."""
    system, found = turns(messages, _message_blocks)
    result = [_Turn(role=role, content=blocks) for role, blocks in found]
    for turn in result:
        # Tool results must open their user turn, before any text the client added after them.
        turn.content.sort(key=lambda b: not isinstance(b, _ToolResult))
    return system, result


def _message_blocks(m: Message) -> list[_Block]:
    match m.role:
        case "user":
            return [*_blocks(m.content)]
        case "assistant":
            text = m.text()
            blocks: list[_Block] = [_Text(text)] if text else []
            return blocks + [_tool_use(c) for c in m.tool_calls or ()]
        case "tool":
            result = (m.content or UNSET) if isinstance(m.content, str) else (_blocks(m.content) or UNSET)
            return [_ToolResult(tool_use_id=m.tool_call_id or "", content=result)]
    return []  # system prompts: `turns` keeps them apart


def _blocks(content: str | list[ContentPart] | None) -> list[_Text | _Image | _Document]:
    return map_parts(content, _Text, _image, _document)


def _document(part: DocumentPart) -> _Document:
    if isinstance(part.url, str):
        return _Document(source=_URLSource(url=part.url))
    media_type = part.media_type if isinstance(part.media_type, str) else "application/pdf"
    data = part.data if isinstance(part.data, str) else ""
    if media_type == "text/plain":
        return _Document(source=_PlainTextSource(media_type=media_type, data=data))
    return _Document(source=_Base64Source(media_type=media_type, data=data))


def _image(url: str) -> _Image:
    if url.startswith(("http://", "https://")):
        return _Image(source=_URLSource(url=url))
    parsed = data_url(url)
    if parsed is not None:
        return _Image(source=_Base64Source(media_type=parsed[0], data=parsed[1]))
    raise InvalidRequest(
        "anthropic: an image_url must be an http(s) URL or a base64 data: URL",
        param="messages",
        code="invalid_image_url",
    )


def _tool_use(call: ToolCall) -> _ToolUse:
    return _ToolUse(id=call.id, name=call.function.name, input=tool_arguments(call, "anthropic"))


def _tool_choice(request: ChatRequest, *, has_tools: bool) -> _ToolChoice | UnsetType:
    choice = request.tool_choice
    if not has_tools:
        return UNSET  # Anthropic refuses a tool_choice without tools; OpenAI clients send it anyway
    if isinstance(choice, ToolChoiceFunction):
        result = _ToolChoice(type="tool", name=choice.function.name)
    elif isinstance(choice, str):
        result = _ToolChoice(type=_TOOL_CHOICES[choice])
    elif request.parallel_tool_calls is False:
        result = _ToolChoice(type="auto")
    else:
        return UNSET
    if request.parallel_tool_calls is False and result.type != "none":
        result.disable_parallel_tool_use = True
    return result


def _number(value: float | None | UnsetType) -> float | UnsetType:
    return value if isinstance(value, (int, float)) else UNSET


def error_from_detail(
    status: int, kind: str, message: str, headers: Mapping[str, str], *, provider: str
) -> GatewayError:
    """Anthropic's error (`type`, `message`) as our error for `status`; its type is the code."""
    if status == 400 and kind == "invalid_request_error" and mentions(message, CONTEXT_OVERFLOW):
        return context_window_exceeded(message, provider=provider)
    return error_for_status(status, message, provider=provider, headers=headers, code=kind or None)


def unified_usage(usage: MessageUsage) -> Usage:
    """Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI counts them in the prompt."""
    cache_read = usage.cache_read_input_tokens or 0
    cache_written = usage.cache_creation_input_tokens or 0
    written_1h = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
    prompt = (usage.input_tokens or 0) + cache_read + cache_written
    completion = usage.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cache_read),
        cache_creation_tokens=cache_written,
        cache_creation_1h_tokens=min(written_1h, cache_written),
    )


adapter = AnthropicAdapter()
