"""Amazon Bedrock's Converse API: the unified request as `POST /model/{modelId}/converse`, the answer back.

Followed: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html (request, response,
errors and their statuses), API_runtime_ConverseStream.html and API_runtime_ConverseStreamOutput.html
(the event-stream members, in `bedrock_stream.py`), API_runtime_ContentBlock / ToolUseBlock /
ToolResultBlock / ToolConfiguration / ToolChoice (the request, in `bedrock_request.py`) / TokenUsage, and
userguide/api-keys-use.html (a Bedrock API key goes in `Authorization: Bearer`). Errors are restJson1:
`{"message": …}` with the type in the `x-amzn-ErrorType` header. Without an API key, an AWS access key signs
each call (SigV4, `sigv4.py`): a configured one, or else the current one of AWS's credential chain
(`credentials.py`), added by the worker just before the call is sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import msgspec
from msgspec import UNSET, Struct

from services.providers.anthropic.adapter import adapter as anthropic_adapter
from services.providers.anthropic.adapter import allowed_betas
from services.providers.base import (
    Authorizer,
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
from services.providers.bedrock import embeddings
from services.providers.bedrock.credentials import ChainSigner, CredentialChain
from services.providers.bedrock.eventstream import EventStreamDecoder
from services.providers.bedrock.request import converse_request
from services.providers.bedrock.settings import BedrockSettings
from services.providers.bedrock.sigv4 import Credentials, sign
from shared.errors import GatewayError
from shared.messages import (
    AnthropicParams,
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingRequest,
    EmbeddingResult,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    Usage,
)

STOP_REASONS = {  # anything else reads as "stop"
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Vendor extras a client may send (OpenAI SDK: `extra_body`) that are documented Converse request fields
# with no OpenAI counterpart (guardrails, model-specific parameters such as top_k, latency-optimised
# inference); they go to Bedrock as sent. Anything else is not Bedrock's to read.
EXTRA_FIELDS = frozenset(
    {
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "performanceConfig",
        "promptVariables",
        "requestMetadata",
    }
)

# --- the response and error bodies, as much of them as we read -----------------------------------


class _ToolUseIn(Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw(b"{}")  # kept as sent: it becomes the tool call's arguments text


class _BlockIn(Struct, rename="camel"):
    # One loose shape for every member, so new kinds (reasoningContent, citations) are skipped, not fatal.
    text: str | None = None
    tool_use: _ToolUseIn | None = None


class _MessageIn(Struct):
    content: list[_BlockIn] = []


class _Output(Struct):
    message: _MessageIn | None = None


class TokenUsage(Struct, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


class _Response(Struct, rename="camel"):
    output: _Output
    stop_reason: str = ""
    usage: TokenUsage | None = None


class ErrorBody(Struct):
    message: str | None = None
    capitalised: str | None = msgspec.field(default=None, name="Message")  # some AWS front ends send it so
    type: str | None = msgspec.field(default=None, name="__type")


# How Bedrock words a prompt that does not fit the model, always as a 400 ValidationException: its own
# "Input is too long for requested model.", or the model's words relayed after
# "The model returned the following errors: " (Anthropic's "prompt is too long: N tokens > M maximum").
# tests/fixtures/bedrock/ has the bodies and their sources.
CONTEXT_OVERFLOW = ("input is too long", "prompt is too long", "exceed context limit")

_encoder = msgspec.json.Encoder()
_response_decoder = msgspec.json.Decoder(_Response)
error_decoder = msgspec.json.Decoder(ErrorBody)


class BedrockAdapter:
    name = "bedrock"
    settings = BedrockSettings
    default_base_url = ""  # per region: https://bedrock-runtime.{region}.amazonaws.com

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock  # a SigV4 signature holds the time it was made

    def build_request(self, request: ChatRequest, model: str, config: BedrockSettings) -> HttpCall:
        return self._call(request, model, config, "converse")

    def authorizer(self, config: BedrockSettings, *, provider: str) -> Authorizer | None:
        if not config.uses_chain():
            return None  # the API key or the configured access key is in the built call already
        chain = CredentialChain(profile=config.aws_profile, region=config.region, provider=provider)
        return ChainSigner(chain, config.region or "", self.clock)

    def build_stream_request(self, request: ChatRequest, model: str, config: BedrockSettings) -> HttpCall:
        # The stream's usage arrives in its `metadata` event without being asked for.
        return self._call(request, model, config, "converse-stream")

    def _call(self, request: ChatRequest, model: str, config: BedrockSettings, operation: str) -> HttpCall:
        native = _native(request, model)
        if native is not None:  # an Anthropic client and a Claude model: Anthropic's own body, via InvokeModel
            operation = _INVOKE[operation]
            body = invoke_body(native, config)
        else:
            body = _encoder.encode(converse_request(request))
            if isinstance(request.extra_json, bytes):
                body = splice_extras(body, request.extra_json, EXTRA_FIELDS.__contains__)
        return self.post(model, operation, body, config)

    def post(self, model: str, operation: str, body: bytes, config: BedrockSettings) -> HttpCall:
        """`POST /model/{model}/{operation}` with `body`, authorised (API key, or a SigV4 signature)."""
        headers = merge_headers({"Content-Type": "application/json"}, config.headers)
        secret = set(config.headers)  # operator-supplied headers often carry credentials
        base_url = (config.base_url or f"https://bedrock-runtime.{config.region}.amazonaws.com").rstrip("/")
        # A model id may carry a version ("anthropic.claude-3-haiku-20240307-v1:0", sent as is, as in the
        # API-key guide's curl example) or be an ARN, whose "/" must stay inside the one path segment.
        url = f"{base_url}/model/{quote(model, safe=':')}/{operation}"
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key}"
            secret.add("Authorization")
        elif config.aws_access_key_id and config.aws_secret_access_key:
            credentials = Credentials(
                config.aws_access_key_id, config.aws_secret_access_key, config.aws_session_token
            )
            signed = sign(
                "POST",
                url,
                headers,
                body,
                credentials=credentials,
                region=config.region or "",
                service="bedrock",
                now=self.clock(),
            )
            headers |= signed
            secret |= {"Authorization", "X-Amz-Security-Token"}
        return HttpCall(method="POST", url=url, headers=headers, body=body, secret_headers=frozenset(secret))

    # --- embeddings (InvokeModel with Titan's or Cohere's body: `embeddings.py`) ---

    def embed_batch_limit(self, model: str) -> int:
        return embeddings.batch_limit(model)

    def build_embed_request(self, request: EmbeddingRequest, model: str, config: BedrockSettings) -> HttpCall:
        return self.post(model, "invoke", embeddings.request_body(request, model), config)

    def parse_embed_response(self, body: bytes, headers: Mapping[str, str], *, provider: str, model: str,
                             inputs: int) -> EmbeddingResult:
        return embeddings.parse_response(body, headers, provider=provider, model=model)

    def parse_response(self, body: bytes, *, provider: str, model: str) -> ChatResult:
        if _is_message(body):  # InvokeModel's answer for a Claude model: Anthropic's Message object
            return anthropic_adapter.parse_response(body, provider=provider, model=model)
        try:
            reply = _response_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise bad_response(provider, str(exc)) from exc
        if reply.output.message is None:
            raise bad_response(provider, "the response has no output message")
        blocks = reply.output.message.content
        texts = [b.text for b in blocks if b.text is not None]
        calls = [
            ToolCall(
                id=b.tool_use.tool_use_id,
                function=FunctionCall(name=b.tool_use.name, arguments=bytes(b.tool_use.input).decode()),
            )
            for b in blocks
            if b.tool_use is not None
        ]
        message = ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or UNSET)
        return ChatResult(
            id=f"chatcmpl-{uuid.uuid4().hex}",  # Converse gives its answers no id
            created=int(time.time()),
            model=model,
            choices=[
                Choice(index=0, message=message, finish_reason=STOP_REASONS.get(reply.stop_reason, "stop"))
            ],
            usage=unified_usage(reply.usage or TokenUsage()),
            provider=provider,
            target_model=model,
        )

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        try:
            parsed = error_decoder.decode(body)
        except msgspec.DecodeError:
            parsed = ErrorBody()
        lowered = {k.lower(): v for k, v in headers.items()}
        # "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", or the body's
        # "com.amazon.coral.validate#ValidationException".
        kind = (lowered.get("x-amzn-errortype") or parsed.type or "").split(":")[0].rpartition("#")[2]
        message = parsed.message or parsed.capitalised or body_snippet(status, body)
        return error_from_exception(status, kind, message, headers, provider=provider)

    def stream_decoder(self) -> StreamDecoder:
        return EventStreamDecoder()  # converse-stream answers in AWS's binary event stream, not SSE

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        # Imported here because the parser builds on this module's tables; cheap once loaded.
        from services.providers.bedrock.stream import ConverseStreamParser

        return ConverseStreamParser(provider=provider, model=model)


def unified_usage(usage: TokenUsage) -> Usage:
    """Converse counts prompt-cache reads and writes apart from `inputTokens`; OpenAI counts them in the
    prompt. Converse reports the writes as one count, so they are priced as five-minute writes."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_write_input_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=usage.output_tokens,
        total_tokens=prompt + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cache_read_input_tokens),
        cache_creation_tokens=usage.cache_write_input_tokens,
    )


# --- Anthropic's models through InvokeModel, for Messages clients ----------------------------------------

# The `anthropic_version` Bedrock's Anthropic models take in the body (Anthropic's SDK sets the same).
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
_INVOKE = {"converse": "invoke", "converse-stream": "invoke-with-response-stream"}
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


class _Kind(Struct):
    type: str = ""


_kind_decoder = msgspec.json.Decoder(_Kind)


def _native(request: ChatRequest, model: str) -> AnthropicParams | None:
    """A Messages client's request for an Anthropic model: sent as Anthropic's body, so thinking,
    `cache_control`, betas and the rest arrive as sent (Converse would translate them)."""
    params = request.anthropic
    if isinstance(params, AnthropicParams) and ("anthropic." in model or "claude" in model):
        return params
    return None


def invoke_body(params: AnthropicParams, config: BedrockSettings) -> bytes:
    """The client's body as Bedrock takes it (docs "Anthropic Claude Messages API" for Bedrock): no `model`
    (it is in the URL) and no `stream` (the operation says), `anthropic_version` and the betas inside."""
    fields = _fields.decode(params.body)
    fields.pop("model", None)
    fields.pop("stream", None)
    fields.setdefault("anthropic_version", msgspec.Raw(_encoder.encode(BEDROCK_ANTHROPIC_VERSION)))
    if betas := allowed_betas(params.betas, config.anthropic_betas):
        fields.setdefault("anthropic_beta", msgspec.Raw(_encoder.encode(betas)))
    return _encoder.encode(fields)


def _is_message(body: bytes) -> bool:
    try:
        return _kind_decoder.decode(body).type == "message"
    except msgspec.DecodeError:
        return False


adapter = BedrockAdapter()


def error_from_exception(
    status: int, kind: str, message: str, headers: Mapping[str, str], *, provider: str
) -> GatewayError:
    """A Bedrock exception (its type name, e.g. `ValidationException`, and message) as our error."""
    if status == 400 and kind == "ValidationException" and mentions(message, CONTEXT_OVERFLOW):
        return context_window_exceeded(message, provider=provider)
    return error_for_status(status, message, provider=provider, headers=headers, code=kind or None)
