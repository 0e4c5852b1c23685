"""Google's Gemini API (AI Studio): the unified request as `models/{model}:generateContent`, the answer back.

Followed: ai.google.dev/api/generate-content (request, `GenerateContentResponse`, `streamGenerateContent`
with `alt=sse`), ai.google.dev/api/caching#Content (roles `user`/`model`, parts), ai.google.dev/api/
caching#FunctionDeclaration (`parametersJsonSchema` takes the client's JSON Schema as is),
ai.google.dev/gemini-api/docs/function-calling (`functionCall`/`functionResponse` parts, `toolConfig`),
ai.google.dev/api#authentication (`x-goog-api-key`) and ai.google.dev/gemini-api/docs/troubleshooting
(the error body `{"error": {"code", "message", "status", "details"}}`). The request translation is in
`gemini_request.py`, the stream parser in `gemini_stream.py`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from urllib.parse import quote

import msgspec
from msgspec import UNSET, Struct

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
    splice_extras,
)
from services.providers.gemini import embeddings
from services.providers.gemini.request import gemini_request
from services.providers.gemini.settings import GeminiSettings
from services.providers.sse import SSEDecoder
from shared.config import ProviderSettings
from shared.errors import GatewayError, InvalidRequest, ProviderError
from shared.messages import (
    ChatRequest,
    ChatResult,
    Choice,
    CompletionTokensDetails,
    EmbeddingRequest,
    EmbeddingResult,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    Usage,
)

API_PATH = "/v1beta/models"

# `Candidate.FinishReason` -> OpenAI's finish_reason; a candidate that called functions and stopped
# normally finished with "tool_calls". Unknown reasons read as "stop".
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# --- the response and error bodies, as much of them as we read ----------------------------------


class _FunctionCallIn(Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw(b"{}")  # kept as sent: it becomes the tool call's arguments text
    id: str | None = None


class _PartIn(Struct, rename="camel"):
    text: str | None = None
    thought: bool = False  # a thought summary, not the answer
    function_call: _FunctionCallIn | None = None


class _ContentIn(Struct):
    parts: list[_PartIn] = []


class Candidate(Struct, rename="camel"):
    content: _ContentIn | None = None
    finish_reason: str | None = None
    index: int = 0


class UsageMetadata(Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class _PromptFeedback(Struct, rename="camel"):
    block_reason: str | None = None


class _Detail(Struct, rename="camel"):
    type: str = msgspec.field(default="", name="@type")
    reason: str | None = None  # google.rpc.ErrorInfo
    retry_delay: str | None = None  # google.rpc.RetryInfo, e.g. "37s"


class ErrorDetail(Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_Detail] = []


class GenerateContentResponse(Struct, rename="camel"):
    candidates: list[Candidate] = []
    usage_metadata: UsageMetadata | None = None
    model_version: str = ""
    response_id: str = ""
    prompt_feedback: _PromptFeedback | None = None
    error: ErrorDetail | None = None  # an error sent inside a stream


class _ErrorBody(Struct):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()
_response_decoder = msgspec.json.Decoder(GenerateContentResponse)
# Some Google front ends wrap the error in a one-element array.
_error_decoder = msgspec.json.Decoder(_ErrorBody | list[_ErrorBody])


class GeminiAdapter:
    name = "gemini"
    settings: type[ProviderSettings] = GeminiSettings
    default_base_url = "https://generativelanguage.googleapis.com"

    def build_request(self, request: ChatRequest, model: str, config: ProviderSettings) -> HttpCall:
        return self._call(request, model, config, "generateContent")

    def build_stream_request(self, request: ChatRequest, model: str, config: ProviderSettings) -> HttpCall:
        # The stream's usage arrives in its chunks' `usageMetadata` without being asked for.
        return self._call(request, model, config, "streamGenerateContent?alt=sse")

    def url(self, config: ProviderSettings, model: str, method: str) -> str:
        """Where `model`'s `method` is called (Vertex AI's adapter changes this and the auth only)."""
        base_url = (config.base_url or self.default_base_url).rstrip("/")
        return f"{base_url}{API_PATH}/{quote(model, safe='')}:{method}"

    def _call(self, request: ChatRequest, model: str, config: ProviderSettings, method: str) -> HttpCall:
        return self.post(model, method, _body(request, model.removeprefix("models/")), config)

    def post(self, model: str, method: str, body: bytes, config: ProviderSettings) -> HttpCall:
        """`POST` to `model`'s `method` with `body` and the API key (Vertex AI's adapter authorizes apart)."""
        headers = {"Content-Type": "application/json"}
        secret = set(config.headers)  # operator-supplied headers often carry credentials
        if config.api_key is not None:
            headers["x-goog-api-key"] = config.api_key
            secret.add("x-goog-api-key")
        return HttpCall(
            method="POST",
            url=self.url(config, model.removeprefix("models/"), method),
            headers=merge_headers(headers, config.headers),
            body=body,
            secret_headers=frozenset(secret),
        )

    # --- embeddings (`embedContent` / `batchEmbedContents`: `embeddings.py`) ---

    def embed_batch_limit(self, model: str) -> int:
        return embeddings.MAX_BATCH

    def build_embed_request(self, request: EmbeddingRequest, model: str, config: ProviderSettings) -> HttpCall:
        method, body = embeddings.request(request, model.removeprefix("models/"))
        return self.post(model, method, body, config)

    def parse_embed_response(self, body: bytes, headers: Mapping[str, str], *, provider: str, model: str,
                             inputs: int) -> EmbeddingResult:
        return embeddings.parse_response(body, provider=provider, model=model, inputs=inputs)

    def parse_response(self, body: bytes, *, provider: str, model: str) -> ChatResult:
        try:
            reply = _response_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise bad_response(provider, str(exc)) from exc
        if not reply.candidates:
            raise blocked_or_empty(reply, provider)
        choices = [_choice(c) for c in reply.candidates]
        return ChatResult(
            id=reply.response_id or f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),  # Gemini does not say when; now is when we got it
            model=reply.model_version or model,
            choices=choices,
            usage=unified_usage(reply.usage_metadata or UsageMetadata()),
            provider=provider,
            target_model=model,
        )

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        try:
            parsed = _error_decoder.decode(body)
            detail = (
                (parsed[0] if parsed else _ErrorBody(ErrorDetail())) if isinstance(parsed, list) else parsed
            )
            return error_from_detail(status, detail.error, headers, provider=provider)
        except msgspec.DecodeError:
            return error_for_status(status, body_snippet(status, body), provider=provider, headers=headers)

    def stream_decoder(self) -> StreamDecoder:
        return SSEDecoder()

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        # Imported here because the parser builds on this module's types; cheap once loaded.
        from services.providers.gemini.stream import ResponseParser

        return ResponseParser(provider=provider, model=model)


# Vendor extras a client may send (OpenAI SDK: `extra_body`) that are documented `GenerateContentRequest`
# fields with no OpenAI counterpart; they go to Gemini as sent. Anything else is not Gemini's to read.
EXTRA_FIELDS = frozenset({"safetySettings", "cachedContent", "labels"})


def _body(request: ChatRequest, model: str) -> bytes:
    body = _encoder.encode(gemini_request(request, model))
    if isinstance(request.extra_json, bytes):
        body = splice_extras(body, request.extra_json, EXTRA_FIELDS.__contains__)
    return body


# How Gemini words a prompt that does not fit the model (a 400 INVALID_ARGUMENT, no reason of its own): "The
# input token count (1200293) exceeds the maximum number of tokens allowed (1048576)." (tests/fixtures/gemini/)
CONTEXT_OVERFLOW = ("exceeds the maximum number of tokens",)


def error_from_detail(
    status: int, error: ErrorDetail, headers: Mapping[str, str], *, provider: str
) -> GatewayError:
    """Gemini's error object as our error for `status`; its `status` ("RESOURCE_EXHAUSTED") is the code."""
    message = error.message or f"HTTP {status}"
    if any(d.reason == "API_KEY_INVALID" for d in error.details):
        # Gemini answers a bad key with 400 INVALID_ARGUMENT: it is our credential, not the caller's request.
        return ProviderError(
            f"{provider}: {message}",
            code="provider_auth_failed",
            retryable=False,
            where=f"provider:{provider}",
        )
    if status == 400 and error.status == "INVALID_ARGUMENT" and mentions(message, CONTEXT_OVERFLOW):
        return context_window_exceeded(message, provider=provider)
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after" not in lowered:
        delay = next((d.retry_delay for d in error.details if d.retry_delay), None)
        if delay is not None and delay.endswith("s"):
            lowered["retry-after"] = delay[:-1]  # RetryInfo's "37s" (or "1.5s") is seconds
    return error_for_status(status, message, provider=provider, headers=lowered, code=error.status or None)


def blocked_or_empty(reply: GenerateContentResponse, provider: str) -> GatewayError:
    feedback = reply.prompt_feedback
    if feedback is not None and feedback.block_reason:
        # The prompt itself was blocked: like OpenAI's and Azure's content filter, the caller's to change.
        return InvalidRequest(
            f"{provider}: the prompt was blocked ({feedback.block_reason})",
            code="content_filter",
            where=f"provider:{provider}",
        )
    return bad_response(provider, "the response has no candidates")


# --- the answer as ours ----------------------------------------------------------------------------


def finish_reason(reason: str | None, called_functions: bool) -> str:
    mapped = FINISH_REASONS.get(reason or "", "stop")
    return "tool_calls" if called_functions and mapped == "stop" else mapped


def tool_call_id(call: _FunctionCallIn) -> str:
    return call.id or f"call_{uuid.uuid4().hex[:24]}"


def _choice(candidate: Candidate) -> Choice:
    parts = candidate.content.parts if candidate.content is not None else []
    texts = [p.text for p in parts if p.text is not None and not p.thought]
    calls = [
        ToolCall(
            id=tool_call_id(p.function_call),
            function=FunctionCall(name=p.function_call.name, arguments=bytes(p.function_call.args).decode()),
        )
        for p in parts
        if p.function_call is not None
    ]
    message = ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or UNSET)
    return Choice(
        index=candidate.index,
        message=message,
        finish_reason=finish_reason(candidate.finish_reason, bool(calls)),
    )


def unified_usage(usage: UsageMetadata) -> Usage:
    """Gemini counts thinking apart from the answer; OpenAI counts reasoning among the completion tokens."""
    prompt = usage.prompt_token_count + usage.tool_use_prompt_token_count
    completion = usage.candidates_token_count + usage.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=usage.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_content_token_count),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=usage.thoughts_token_count),
    )


adapter = GeminiAdapter()
