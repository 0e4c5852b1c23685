"""Every payload that travels on the bus: the unified chat request, its replies, stream frames.

Field names follow OpenAI's Chat Completions API, so the ingress decodes an HTTP body straight into
`ChatRequest`. Fields a client did not send stay `UNSET` and are never forwarded to a provider.
Replies are one tagged union (`Reply`), decoded in one call and dispatched with `match`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# --- request -------------------------------------------------------------------------------------

# The ranges OpenAI documents for its parameters (API reference, "Create chat completion"): a body outside
# them fails to decode, with the field named, before it costs an upstream call.
NonEmptyStr = Annotated[str, Meta(min_length=1)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Choices = Annotated[int, Meta(ge=1, le=128)]
TokenCount = Annotated[int, Meta(ge=1)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
LogitBias = Annotated[float, Meta(ge=-100, le=100)]


class ImageURL(Struct, frozen=True, kw_only=True, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class TextPart(Struct, frozen=True, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(Struct, frozen=True, kw_only=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(Struct, frozen=True, kw_only=True):
    name: str
    arguments: str


class ToolCall(Struct, frozen=True, kw_only=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(Struct, frozen=True, kw_only=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET

    def text(self) -> str:
        """The message's text parts joined; images and other parts contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class FunctionDef(Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    # A JSON Schema is arbitrary JSON by definition; it is the one place a free-form dict is allowed.
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class Tool(Struct, frozen=True, kw_only=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(Struct, frozen=True, kw_only=True):
    name: str


class ToolChoiceFunction(Struct, frozen=True, kw_only=True):
    function: NamedFunction
    type: Literal["function"] = "function"


class JsonSchemaFormat(Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    description: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class ResponseFormat(Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | UnsetType = UNSET


class StreamOptions(Struct, frozen=True, kw_only=True, omit_defaults=True):
    include_usage: bool | UnsetType = UNSET


class ChatRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The unified chat request: OpenAI's parameters, each UNSET unless the client sent it."""

    model: NonEmptyStr
    messages: Annotated[list[Message], Meta(min_length=1)]
    temperature: Temperature | None | UnsetType = UNSET
    top_p: Probability | None | UnsetType = UNSET
    n: Choices | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    stream_options: StreamOptions | None | UnsetType = UNSET
    stop: str | list[str] | None | UnsetType = UNSET
    max_tokens: TokenCount | None | UnsetType = UNSET
    max_completion_tokens: TokenCount | None | UnsetType = UNSET
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    logit_bias: dict[str, LogitBias] | None | UnsetType = UNSET
    logprobs: bool | None | UnsetType = UNSET
    top_logprobs: TopLogprobs | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
    tools: list[Tool] | None | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    response_format: ResponseFormat | None | UnsetType = UNSET
    reasoning_effort: str | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    # Fields this gateway does not model (vendor extras), kept as one JSON object and merged into the
    # body of OpenAI-compatible providers, so nothing a client sent is silently dropped.
    extra_json: bytes | UnsetType = UNSET
    # A request that arrived on OpenAI's Responses API, as that API's JSON body (the whole conversation as
    # its `input`, nothing stored upstream): a provider that serves the Responses API itself is sent this
    # instead of a translation, so what chat completions cannot carry (reasoning items, encrypted content
    # included; built-in tools) survives. Every other provider reads the fields above.
    responses_body: bytes | UnsetType = UNSET

    def max_output_tokens(self) -> int | None:
        for value in (self.max_completion_tokens, self.max_tokens):
            if isinstance(value, int):
                return value
        return None

    def stop_list(self) -> list[str]:
        if isinstance(self.stop, str):
            return [self.stop]
        if isinstance(self.stop, list):
            return self.stop
        return []


# Client-visible fields that never change the answer: left out of the cache key.
NON_SEMANTIC_FIELDS = ("stream", "stream_options", "user", "metadata")

# --- replies -------------------------------------------------------------------------------------


class CompletionTokensDetails(Struct, frozen=True, kw_only=True):
    reasoning_tokens: int = 0


class PromptTokensDetails(Struct, frozen=True, kw_only=True):
    cached_tokens: int = 0


class Usage(Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ResponseMessage(Struct, frozen=True, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET


class Choice(Struct, frozen=True, kw_only=True):
    index: int
    message: ResponseMessage
    finish_reason: str | None = "stop"
    logprobs: None = None


class ChatResult(Struct, frozen=True, kw_only=True, tag="result", tag_field="kind"):
    """A complete answer, as the provider worker made it and the cache stores it."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    provider: str
    target_model: str
    system_fingerprint: str | None = None
    cost_usd: float = 0.0
    provider_seconds: float = 0.0
    # Streams only: the upstream's time to its first chunk, what "least latency" means for a stream.
    first_chunk_seconds: float | None = None
    # Which of the request's stop sequences ended the answer, when the provider says (Anthropic does).
    stop_sequence: str | None = None
    # Answered by a provider's own Responses API (see `ChatRequest.responses_body`): its `output` items as
    # JSON, reasoning items included, for a Responses client; `choices` say the same for everyone else.
    responses_output: bytes | None = None


class ErrorReply(Struct, frozen=True, kw_only=True, tag="error", tag_field="kind"):
    """Any failure, wherever it happened; `status`, `type` and `code` are what the client will see."""

    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    where: str = ""
    # Set when chunks of a stream already reached the client: no other target may take over.
    stream_started: bool = False


class StreamChunk(Struct, frozen=True, kw_only=True, tag="chunk", tag_field="kind"):
    """One piece of a streamed answer; `seq` starts at 0 and has no gaps. The first chunk also says
    which answer this is (`id`, `model`, `created`), so the ingress can label every SSE chunk."""

    seq: int
    index: int = 0
    content: str | None = None
    role: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    id: str | None = None
    model: str | None = None
    created: int | None = None
    provider: str | None = None
    # A whole output item from a provider's own Responses API that the fields above cannot express (a
    # reasoning item), as JSON: a Responses client receives it as it is; other dialects have no place for it.
    item_json: bytes | None = None


class FunctionCallDelta(Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Struct, frozen=True, kw_only=True, omit_defaults=True):
    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: FunctionCallDelta | UnsetType = UNSET


class StreamEnd(Struct, frozen=True, kw_only=True, tag="end", tag_field="kind"):
    """The last frame of a successful stream: the count of chunks sent lets the receiver spot a loss."""

    seq: int
    id: str
    model: str
    created: int
    finish_reason: str | None
    usage: Usage | None
    provider: str
    target_model: str
    cost_usd: float = 0.0
    stop_sequence: str | None = None  # as in `ChatResult`


class CacheMiss(Struct, frozen=True, kw_only=True, tag="miss", tag_field="kind"):
    """The cache tier's answer when it holds nothing: the key under which to store the answer."""

    key: str


Reply = ChatResult | ErrorReply | StreamChunk | StreamEnd | CacheMiss

# Module-level codecs: building an Encoder/Decoder per message costs more than using one.
_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(ChatRequest)
reply_decoder = msgspec.msgpack.Decoder(Reply)


def encode(message: Struct) -> bytes:
    return _encoder.encode(message)


class BreakerEvent(Struct, frozen=True, kw_only=True):
    """A router replica's breaker for `target` changed state; every other replica adopts it."""

    target: str
    state: Literal["closed", "open", "half_open"]
    origin: str


breaker_decoder = msgspec.msgpack.Decoder(BreakerEvent)


class HealthReport(Struct, frozen=True, kw_only=True):
    """One service instance's answer to a health probe."""

    service: str
    instance: str
    status: Literal["up", "degraded", "down"] = "up"
    checks: dict[str, str] = {}


health_decoder = msgspec.msgpack.Decoder(HealthReport)
