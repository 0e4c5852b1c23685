"""OpenAI Chat Completions, and any server that speaks it: one adapter class, one instance per name.

The unified request already uses OpenAI's field names, so the body is that request re-encoded for the
provider's model, with the client's vendor extras (`extra_json`) merged into its top level. Stream chunks are
turned into deltas in `openai_stream.py`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.base import (
    HttpCall,
    StreamDecoder,
    StreamParser,
    bad_response,
    body_snippet,
    context_window_exceeded,
    error_for_status,
    merge_headers,
    splice_extras,
)
from services.providers.openai import embeddings, responses
from services.providers.openai.settings import OpenAICompatibleSettings, OpenAISettings
from services.providers.parts import forced_tool_missing
from services.providers.reasoning import effort_of, thinking_of
from services.providers.sse import SSEDecoder
from shared.config import ProviderSettings
from shared.errors import ContextWindowExceeded, GatewayError, InvalidRequest
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ChatResult,
    Choice,
    ContentPart,
    DocumentPart,
    EmbeddingRequest,
    EmbeddingResult,
    FileData,
    FilePart,
    FunctionCall,
    Message,
    ResponseMessage,
    StreamOptions,
    TextPart,
    ToolCall,
    Usage,
)

log = logging.getLogger("llm_edge.provider.openai")

# Models that take `reasoning_effort` (OpenAI's reasoning models); others refuse it with a 400.
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")

# --- the response and error bodies, as much of them as we read -----------------------------------


class _Function(Struct):
    name: str = ""
    arguments: str = ""


class _ToolCall(Struct):
    id: str = ""
    type: str = "function"
    function: _Function | None = None


class _Message(Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None
    refusal: str | None | UnsetType = UNSET


class _Choice(Struct):
    message: _Message
    index: int = 0
    finish_reason: str | None = None


class _Completion(Struct):
    choices: list[_Choice] = []
    object: str = ""  # "response" when a Responses API call answered (see `responses.py`)
    id: str = ""
    created: int = 0
    model: str = ""
    usage: Usage | None = None
    system_fingerprint: str | None = None


class _ErrorDetail(Struct):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorBody(Struct):
    error: _ErrorDetail | str | None = None
    message: str | None = None  # some OpenAI-compatible servers put it at the top level


_completion_decoder = msgspec.json.Decoder(_Completion)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_encoder = msgspec.json.Encoder()

# Fields the gateway models win over a vendor extra of the same name: an extra must never re-route the
# call to another model or switch streaming on behind the worker's back.
_MODELED_FIELDS = frozenset(ChatRequest.__struct_fields__)

_WITH_USAGE = StreamOptions(include_usage=True)

# 429s that waiting does not cure: retrying the same target is pointless (a fallback may still help).
_NOT_RETRYABLE_CODES = frozenset({"insufficient_quota"})


class OpenAICompatible:
    """An `HttpAdapter` for `POST {base_url}/chat/completions` with a bearer key."""

    def __init__(self, name: str, default_base_url: str, settings: type[ProviderSettings],
                 embed_encoding: Literal["float", "base64"] = "float") -> None:
        self.name = name
        self.default_base_url = default_base_url
        self.settings = settings
        # How vectors are asked of the upstream: base64 (float32 bytes, no float parsing) where it is
        # documented, floats from servers that may only know them.
        self.embed_encoding = embed_encoding

    def build_request(self, request: ChatRequest, model: str, config: ProviderSettings) -> HttpCall:
        return self._call(request, model, config, stream=False)

    def _messages(self, messages: list[Message]) -> list[Message]:
        """Documents (from a Messages client) as OpenAI's file parts: a PDF inline, plain text as text."""
        if not any(isinstance(m.content, list) and any(isinstance(p, DocumentPart) for p in m.content)
                   for m in messages):
            return messages
        return [msgspec.structs.replace(m, content=[self._part(p) for p in m.content])
                if isinstance(m.content, list) else m for m in messages]

    def _part(self, part: ContentPart) -> ContentPart:
        if not isinstance(part, DocumentPart):
            return part
        if isinstance(part.data, str) and part.media_type == "text/plain":
            return TextPart(text=part.data)
        if isinstance(part.data, str) and isinstance(part.media_type, str):
            return FilePart(file=FileData(filename="document.pdf" if part.media_type == "application/pdf"
                                          else "document", file_data=f"data:{part.media_type};base64,{part.data}"))
        raise InvalidRequest(f"{self.name}: documents by URL cannot be read by this provider; send the document "
                             "inline (base64).", param="messages", code="unsupported_content")

    def _effort(self, request: ChatRequest, model: str) -> str | None | UnsetType:
        """The client's `reasoning_effort`, else a Messages client's thinking mapped to it for a reasoning
        model (the others refuse the parameter); what has no counterpart (betas, caching hints) is dropped."""
        if isinstance(params := request.anthropic, AnthropicParams) and params.betas:
            log.debug("%s: anthropic-beta values ignored: %s", self.name, ", ".join(params.betas))
        if not isinstance(request.reasoning_effort, UnsetType):
            return request.reasoning_effort
        effort = effort_of(thinking_of(request))
        if effort is None or not model.startswith(REASONING_MODELS):
            return UNSET
        return effort

    def build_stream_request(self, request: ChatRequest, model: str, config: ProviderSettings) -> HttpCall:
        # Usage arrives in one last chunk only when asked for; without it a stream cannot be billed.
        return self._call(request, model, config, stream=True)

    def _call(self, request: ChatRequest, model: str, config: ProviderSettings, *, stream: bool) -> HttpCall:
        forced_tool_missing(request, self.name)
        # The worker decides how to call, whatever the client asked: one answer, or a stream with usage.
        upstream = msgspec.structs.replace(
            request,
            model=model,
            stream=True if stream else UNSET,
            stream_options=_WITH_USAGE if stream else UNSET,
            extra_json=UNSET,
            anthropic=UNSET,
            reasoning_effort=self._effort(request, model),
            messages=self._messages(request.messages),
        )
        if isinstance(request.responses_body, bytes) and config.native_responses():
            body = responses.upstream_body(request.responses_body, model, stream=stream)
            url = self.responses_url(config)
        else:
            body = _encoder.encode(msgspec.structs.replace(upstream, responses_body=UNSET))
            url = self.url(config, model)
            if isinstance(request.extra_json, bytes):
                body = _merge_extras(body, request.extra_json)
        return self.post(url, body, config)

    def post(self, url: str, body: bytes, config: ProviderSettings) -> HttpCall:
        """A JSON POST to `url` with the provider's key and the operator's headers."""
        headers = {"Content-Type": "application/json"}
        secret = set(config.headers)  # operator-supplied headers often carry credentials
        if config.api_key is not None:
            name, value = self.auth_header(config.api_key)
            headers[name] = value
            secret.add(name)
        return HttpCall(
            method="POST",
            url=url,
            headers=merge_headers(headers, config.headers),
            body=body,
            secret_headers=frozenset(secret),
        )

    # --- embeddings (`embeddings.py`) ---

    def embed_batch_limit(self, model: str) -> int:
        return embeddings.MAX_INPUTS

    def build_embed_request(self, request: EmbeddingRequest, model: str, config: ProviderSettings) -> HttpCall:
        body = embeddings.request_body(request, model, self.embed_encoding)
        return self.post(self.embeddings_url(config, model), body, config)

    def parse_embed_response(self, body: bytes, headers: Mapping[str, str], *, provider: str, model: str,
                             inputs: int) -> EmbeddingResult:
        return embeddings.parse_response(body, provider=provider, model=model)

    def embeddings_url(self, config: ProviderSettings, model: str) -> str:
        return f"{(config.base_url or self.default_base_url).rstrip('/')}/embeddings"

    # --- where to call: the two things an OpenAI-shaped provider (Azure) may change ---

    def url(self, config: ProviderSettings, model: str) -> str:
        return f"{(config.base_url or self.default_base_url).rstrip('/')}/chat/completions"

    def responses_url(self, config: ProviderSettings) -> str:
        return f"{(config.base_url or self.default_base_url).rstrip('/')}/responses"

    def auth_header(self, key: str) -> tuple[str, str]:
        return "Authorization", f"Bearer {key}"

    def stream_decoder(self) -> StreamDecoder:
        return SSEDecoder()

    def parse_response(self, body: bytes, *, provider: str, model: str) -> ChatResult:
        try:
            completion = _completion_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise bad_response(provider, str(exc)) from exc
        if completion.object == "response":
            return responses.parse_response(body, provider=provider, model=model)
        if not completion.choices:
            raise bad_response(provider, "the response has no choices")
        return ChatResult(
            id=completion.id or f"chatcmpl-{uuid.uuid4().hex}",
            created=completion.created or int(time.time()),
            model=completion.model or model,
            choices=[_choice(c) for c in completion.choices],
            usage=completion.usage or Usage(),
            provider=provider,
            target_model=model,
            system_fingerprint=completion.system_fingerprint,
        )

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        return error_from_body(status, body, headers, provider=provider)

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        # Imported here because the parser builds on this module (its error bodies); cheap once loaded.
        from services.providers.openai.stream import ChunkParser

        return ChunkParser(provider=provider, model=model)


def error_from_body(status: int, body: bytes, headers: Mapping[str, str], *, provider: str) -> GatewayError:
    """An OpenAI error body (`{"error": {...}}` or a compatible server's variant) as our error for `status`."""
    message, code, param = body_snippet(status, body), None, None
    try:
        parsed = _error_decoder.decode(body)
    except msgspec.DecodeError:
        parsed = _ErrorBody()
    if isinstance(parsed.error, _ErrorDetail):
        message = parsed.error.message or message
        code = None if parsed.error.code is None else str(parsed.error.code)
        param = parsed.error.param
    elif isinstance(parsed.error, str) and parsed.error:
        message = parsed.error
    elif parsed.message:
        message = parsed.message
    if code == ContextWindowExceeded.default_code:
        return context_window_exceeded(message, provider=provider)
    error = error_for_status(status, message, provider=provider, headers=headers, code=code)
    error.param = param
    if code in _NOT_RETRYABLE_CODES:
        error.is_retryable = False
    return error


def _choice(choice: _Choice) -> Choice:
    message = choice.message
    calls = [
        ToolCall(id=c.id, function=FunctionCall(name=c.function.name, arguments=c.function.arguments))
        for c in message.tool_calls or ()
        if c.function is not None
    ]
    return Choice(
        index=choice.index,
        message=ResponseMessage(content=message.content, tool_calls=calls or UNSET, refusal=message.refusal),
        finish_reason=choice.finish_reason,
    )


def _merge_extras(body: bytes, extra_json: bytes) -> bytes:
    return splice_extras(body, extra_json, lambda key: key not in _MODELED_FIELDS)


adapter = OpenAICompatible("openai", "https://api.openai.com/v1", OpenAISettings, embed_encoding="base64")
openai_compatible = OpenAICompatible(
    "openai_compatible", "http://127.0.0.1:8000/v1", OpenAICompatibleSettings
)
