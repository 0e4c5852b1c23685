"""Google's Gemini API (AI Studio): the unified request as `models/{model}:generateContent`, the answer back.

Followed: ai.google.dev/api/generate-content (request, `GenerateContentResponse`, `streamGenerateContent`
with `alt=sse`), ai.google.dev/api/caching#Content (roles `user`/`model`, parts), ai.google.dev/api/
caching#FunctionDeclaration (`parametersJsonSchema` takes the client's JSON Schema as is),
ai.google.dev/gemini-api/docs/function-calling (`functionCall`/`functionResponse` parts, `toolConfig`),
ai.google.dev/api#authentication (`x-goog-api-key`) and ai.google.dev/gemini-api/docs/troubleshooting
(the error body `{"error": {"code", "message", "status", "details"}}`). The stream parser is in
`gemini_stream.py`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.base import (
    HttpCall,
    StreamDecoder,
    StreamParser,
    bad_response,
    body_snippet,
    error_for_status,
    merge_headers,
)
from services.providers.sse import SSEDecoder
from shared.config import ProviderConfig
from shared.errors import GatewayError, InvalidRequest, ProviderError
from shared.messages import (
    ChatRequest,
    ChatResult,
    Choice,
    CompletionTokensDetails,
    ContentPart,
    FunctionCall,
    ImagePart,
    Message,
    PromptTokensDetails,
    ResponseFormat,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolChoiceFunction,
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
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# --- the request body ----------------------------------------------------------------------------


class _Blob(Struct, rename="camel"):
    mime_type: str
    data: str


class _FunctionCallOut(Struct):
    name: str
    args: dict[str, msgspec.Raw]


class _FunctionResponse(Struct):
    name: str
    response: dict[str, Any]


class _Part(Struct, rename="camel", omit_defaults=True):
    text: str | UnsetType = UNSET
    inline_data: _Blob | UnsetType = UNSET
    function_call: _FunctionCallOut | UnsetType = UNSET
    function_response: _FunctionResponse | UnsetType = UNSET


class _Content(Struct, omit_defaults=True):
    parts: list[_Part]
    role: Literal["user", "model"] | UnsetType = UNSET


class _FunctionDeclaration(Struct, rename="camel", omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    parameters_json_schema: dict[str, Any] | UnsetType = UNSET


class _Tool(Struct, rename="camel"):
    function_declarations: list[_FunctionDeclaration]


class _FunctionCallingConfig(Struct, rename="camel", omit_defaults=True):
    mode: str
    allowed_function_names: list[str] | UnsetType = UNSET


class _ToolConfig(Struct, rename="camel"):
    function_calling_config: _FunctionCallingConfig


class _GenerationConfig(Struct, rename="camel", omit_defaults=True):
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    max_output_tokens: int | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    candidate_count: int | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    response_mime_type: str | UnsetType = UNSET
    response_json_schema: dict[str, Any] | UnsetType = UNSET


class _Request(Struct, rename="camel", omit_defaults=True):
    contents: list[_Content]
    system_instruction: _Content | UnsetType = UNSET
    tools: list[_Tool] | UnsetType = UNSET
    tool_config: _ToolConfig | UnsetType = UNSET
    generation_config: _GenerationConfig | UnsetType = UNSET


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
_args_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class GeminiAdapter:
    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"

    def build_request(self, request: ChatRequest, model: str, config: ProviderConfig) -> HttpCall:
        return self._call(request, model, config, "generateContent")

    def build_stream_request(self, request: ChatRequest, model: str, config: ProviderConfig) -> HttpCall:
        # The stream's usage arrives in its chunks' `usageMetadata` without being asked for.
        return self._call(request, model, config, "streamGenerateContent?alt=sse")

    def _call(self, request: ChatRequest, model: str, config: ProviderConfig, method: str) -> HttpCall:
        headers = {"Content-Type": "application/json"}
        secret = set(config.headers)  # operator-supplied headers often carry credentials
        if config.api_key is not None:
            headers["x-goog-api-key"] = config.api_key
            secret.add("x-goog-api-key")
        base_url = (config.base_url or self.default_base_url).rstrip("/")
        name = quote(model.removeprefix("models/"), safe="")
        return HttpCall(
            method="POST",
            url=f"{base_url}{API_PATH}/{name}:{method}",
            headers=merge_headers(headers, config.headers),
            body=_encoder.encode(gemini_request(request)),
            secret_headers=frozenset(secret),
        )

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
            detail = (parsed[0] if parsed else _ErrorBody(ErrorDetail())) if isinstance(parsed, list) else parsed
            return error_from_detail(status, detail.error, headers, provider=provider)
        except msgspec.DecodeError:
            return error_for_status(status, body_snippet(status, body), provider=provider, headers=headers)

    def config_problem(self, config: ProviderConfig) -> str | None:
        return None

    def stream_decoder(self) -> StreamDecoder:
        return SSEDecoder()

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        # Imported here because the parser builds on this module's types; cheap once loaded.
        from services.providers.gemini_stream import ResponseParser

        return ResponseParser(provider=provider, model=model)


def error_from_detail(
    status: int, error: ErrorDetail, headers: Mapping[str, str], *, provider: str
) -> GatewayError:
    """Gemini's error object as our error for `status`; its `status` string ("RESOURCE_EXHAUSTED") is the code."""
    message = error.message or f"HTTP {status}"
    if any(d.reason == "API_KEY_INVALID" for d in error.details):
        # Gemini answers a bad key with 400 INVALID_ARGUMENT: it is our credential, not the caller's request.
        return ProviderError(f"{provider}: {message}", code="provider_auth_failed", retryable=False,
                             where=f"provider:{provider}")
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
        return InvalidRequest(f"{provider}: the prompt was blocked ({feedback.block_reason})",
                              code="content_filter", where=f"provider:{provider}")
    return bad_response(provider, "the response has no candidates")


# --- the unified request as Gemini's ---------------------------------------------------------------


def gemini_request(request: ChatRequest) -> _Request:
    system, contents = _contents(request.messages)
    tools = [
        _FunctionDeclaration(
            name=t.function.name,
            description=t.function.description,
            parameters_json_schema=t.function.parameters,
        )
        for t in request.tools or ()
    ]
    return _Request(
        contents=contents,
        system_instruction=_Content(parts=[_Part(text="\n\n".join(system))]) if system else UNSET,
        tools=[_Tool(function_declarations=tools)] if tools else UNSET,
        tool_config=_tool_config(request) if tools else UNSET,
        generation_config=_generation_config(request),
    )


def _generation_config(request: ChatRequest) -> _GenerationConfig | UnsetType:
    mime: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    if isinstance(fmt := request.response_format, ResponseFormat) and fmt.type != "text":
        mime = "application/json"
        if not isinstance(fmt.json_schema, UnsetType):
            schema = fmt.json_schema.schema
    config = _GenerationConfig(
        temperature=_given(request.temperature),
        top_p=_given(request.top_p),
        max_output_tokens=request.max_output_tokens() or UNSET,
        stop_sequences=request.stop_list() or UNSET,
        candidate_count=_given(request.n),
        presence_penalty=_given(request.presence_penalty),
        frequency_penalty=_given(request.frequency_penalty),
        seed=_given(request.seed),
        response_mime_type=mime,
        response_json_schema=schema,
    )
    return config if config != _GenerationConfig() else UNSET


def _contents(messages: list[Message]) -> tuple[list[str], list[_Content]]:
    """System prompts apart; the rest as `user`/`model` turns, consecutive same-role messages merged."""
    system: list[str] = []
    contents: list[_Content] = []
    names: dict[str, str] = {}  # tool call id -> function name: a functionResponse is matched by name
    for m in messages:
        match m.role:
            case "system" | "developer":
                system.append(m.text())
                continue
            case "user":
                role: Literal["user", "model"] = "user"
                parts = _parts(m.content)
            case "assistant":
                role = "model"
                text = m.text()
                parts = [_Part(text=text)] if text else []
                for call in m.tool_calls or ():
                    names[call.id] = call.function.name
                    parts.append(_Part(function_call=_function_call(call)))
            case "tool":
                role = "user"
                name = names.get(m.tool_call_id or "") or (m.name if isinstance(m.name, str) else "")
                if not name:
                    raise InvalidRequest(
                        f"gemini: tool message {m.tool_call_id!r} answers no earlier tool call",
                        param="messages", code="invalid_tool_call_id",
                    )
                parts = [_Part(function_response=_FunctionResponse(name=name, response=_result(m.text())))]
        if not parts:
            continue  # Gemini rejects a content without parts
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(_Content(role=role, parts=parts))
    return system, contents


def _parts(content: str | list[ContentPart] | None) -> list[_Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_Part(text=content)] if content else []
    parts: list[_Part] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                parts.append(_Part(text=part.text))
        elif isinstance(part, ImagePart):
            parts.append(_Part(inline_data=_image(part.image_url.url)))
    return parts


def _image(url: str) -> _Blob:
    header, sep, data = url.partition(",")
    if url.startswith("data:") and sep and header.endswith(";base64"):
        return _Blob(mime_type=header[5:-7], data=data)
    # `fileData` wants a Files API URI; fetching arbitrary URLs on the caller's behalf is not ours to do.
    raise InvalidRequest("gemini: an image_url must be a base64 data: URL", param="messages",
                         code="invalid_image_url")


def _function_call(call: ToolCall) -> _FunctionCallOut:
    try:
        args = _args_decoder.decode(call.function.arguments or "{}")
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"gemini: tool call {call.id!r} has arguments that are not a JSON object",
            param="messages", code="invalid_tool_arguments",
        ) from exc
    return _FunctionCallOut(name=call.function.name, args=args)


def _result(text: str) -> dict[str, Any]:
    """A tool's output as `functionResponse.response`, which must be an object: JSON objects as they are,
    anything else under `result` (the key Gemini's function-calling guide uses)."""
    try:
        return _object_decoder.decode(text)
    except msgspec.DecodeError:
        return {"result": text}


def _tool_config(request: ChatRequest) -> _ToolConfig | UnsetType:
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        config = _FunctionCallingConfig(mode="ANY", allowed_function_names=[choice.function.name])
    elif isinstance(choice, str):
        config = _FunctionCallingConfig(mode=_TOOL_MODES[choice])
    else:
        return UNSET
    return _ToolConfig(function_calling_config=config)


def _given(value: Any) -> Any:
    return UNSET if value is None else value


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
        ToolCall(id=tool_call_id(p.function_call),
                 function=FunctionCall(name=p.function_call.name, arguments=bytes(p.function_call.args).decode()))
        for p in parts
        if p.function_call is not None
    ]
    message = ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or UNSET)
    return Choice(index=candidate.index, message=message,
                  finish_reason=finish_reason(candidate.finish_reason, bool(calls)))


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
