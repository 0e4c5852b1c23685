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
TokenLimit = Annotated[int, Meta(ge=1)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
LogitBias = Annotated[float, Meta(ge=-100, le=100)]


class ImageURL(Struct, frozen=True, kw_only=True, omit_defaults=True):
    url: str
    detail: str | UnsetType = UNSET


class TextPart(Struct, frozen=True, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(Struct, frozen=True, kw_only=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


class DocumentPart(Struct, frozen=True, kw_only=True, omit_defaults=True, tag="document", tag_field="type"):
    """A document (a PDF or plain text, base64 or by URL), as Anthropic's Messages API takes it."""

    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET  # base64 (or the text itself for `text/plain`)
    url: str | UnsetType = UNSET


class FileData(Struct, frozen=True, kw_only=True, omit_defaults=True):
    filename: str | UnsetType = UNSET
    file_data: str | UnsetType = UNSET  # a base64 data: URL
    file_id: str | UnsetType = UNSET


class FilePart(Struct, frozen=True, kw_only=True, tag="file", tag_field="type"):
    """OpenAI's file input (a PDF, inline or uploaded)."""

    file: FileData


ContentPart = TextPart | ImagePart | DocumentPart | FilePart


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


class Thinking(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Extended thinking as a Messages client asked for it (`thinking`, and `output_config.effort`), for the
    providers that map it to their own reasoning control."""

    type: str  # "enabled", "disabled" or "adaptive"
    budget_tokens: int | UnsetType = UNSET
    effort: str | UnsetType = UNSET


class AnthropicParams(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What only Anthropic's Messages API expresses. An Anthropic upstream receives the client's `body`
    unchanged (thinking, `cache_control`, `context_management`, server tools, ...); other providers read the
    unified fields and map what has a counterpart here (`thinking`, `top_k`) or drop it."""

    body: bytes  # the client's JSON body without `stream` (the worker decides that)
    betas: list[str] = []  # the `anthropic-beta` values
    version: str | UnsetType = UNSET  # `anthropic-version`
    beta_query: bool = False  # the client called `/v1/messages?beta=true`
    thinking: Thinking | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    # The client asked the provider to cache a prompt prefix (`cache_control`): this gateway's own response
    # cache is skipped for such a request (see `services/ingress/app.py`).
    prompt_caching: bool = False


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
    max_tokens: TokenLimit | None | UnsetType = UNSET
    max_completion_tokens: TokenLimit | None | UnsetType = UNSET
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
    # Set by the Messages dialect only (never decoded from an OpenAI body: see `services/ingress/parse.py`).
    anthropic: AnthropicParams | UnsetType = UNSET
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
    # Prompt tokens written to the provider's prompt cache (Anthropic's `cache_creation_input_tokens`),
    # counted in `prompt_tokens` as cache reads are, and priced apart.
    cache_creation_tokens: int = 0
    # The part of them written for one hour (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), priced
    # at the 1-hour write rate; the rest are 5-minute writes.
    cache_creation_1h_tokens: int = 0

    @property
    def cache_read_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details is not None else 0


class ThinkingBlock(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A block of the model's extended thinking, kept whole so it can be sent back in the history: its
    text and signature, or (`redacted_thinking`) the encrypted `data`."""

    type: Literal["thinking", "redacted_thinking"] = "thinking"
    thinking: str | UnsetType = UNSET
    signature: str | UnsetType = UNSET
    data: str | UnsetType = UNSET


class ResponseMessage(Struct, frozen=True, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    thinking: list[ThinkingBlock] | UnsetType = UNSET  # before the text, as Anthropic returns them
    # Blocks only Anthropic's servers make (server tools' use and results: web search, code execution, ...),
    # each the JSON of the block as the provider sent it; a Messages client gets them back as they were.
    server_blocks: list[bytes] | UnsetType = UNSET
    # An Anthropic answer's whole `content` array (JSON) as sent, kept when it holds what the fields above
    # cannot (server tools' blocks, citations, the blocks' order): a Messages client gets it unchanged.
    content_json: bytes | UnsetType = UNSET


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
    # Extended thinking: a piece of a thinking block's text, its signature (which closes the block), or a
    # whole redacted block's data.
    thinking: str | None = None
    signature: str | None = None
    redacted_thinking: str | None = None
    # A block only Anthropic's servers make (see `ResponseMessage.server_blocks`): its start (the block's JSON)
    # or one of its deltas (the delta's JSON).
    server_block: bytes | None = None
    server_delta: bytes | None = None
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


class TokenCount(Struct, frozen=True, kw_only=True, tag="count", tag_field="kind"):
    """The answer to a count-tokens request (a `ChatRequest` on the count subjects): the prompt's input
    tokens, from the provider itself or (`estimated`) from a local tokenizer."""

    input_tokens: int
    provider: str
    model: str
    estimated: bool = False


class Delivered(Struct, frozen=True, kw_only=True, tag="delivered", tag_field="kind"):
    """A worker's outcome for the router when its answer went straight to the ingress (`Llm-Answer-To`)
    and the router needs nothing of it but that it succeeded."""


# --- embeddings ----------------------------------------------------------------------------------

# One input of an embeddings request: a text, or a token array (OpenAI's tokens, for providers that take them).
EmbeddingInput = str | list[int]
Dimensions = Annotated[int, Meta(ge=1)]


class EmbeddingRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The unified embeddings request (OpenAI's `POST /v1/embeddings`), its `input` always a list: one text
    or token array per vector wanted. How the vectors are encoded for the client (`encoding_format`) is the
    edge's business: on the bus a vector is always little-endian float32 bytes (`EmbeddingResult.vectors`)."""

    model: NonEmptyStr
    input: Annotated[list[EmbeddingInput], Meta(min_length=1)]
    dimensions: Dimensions | UnsetType = UNSET
    user: str | UnsetType = UNSET
    # Vendor extras the client sent (OpenAI SDK `extra_body`), one JSON object: an adapter reads the ones its
    # provider documents (Cohere's `input_type`, Titan's `normalize`, Gemini's `task_type`), others ignore them.
    extra_json: bytes | UnsetType = UNSET


class EmbeddingResult(Struct, frozen=True, kw_only=True, tag="embeddings", tag_field="kind"):
    """The vectors of an `EmbeddingRequest`, one per input in input order, each little-endian float32 bytes
    (`array("f")` / numpy `<f4`): what the cache stores per input and what the edge encodes as floats or
    base64. `usage` counts the prompt tokens the provider charged for (`completion_tokens` stays 0)."""

    model: str
    vectors: list[bytes]
    usage: Usage
    provider: str
    target_model: str
    cost_usd: float = 0.0
    provider_seconds: float = 0.0


class VectorLookup(Struct, frozen=True, kw_only=True):
    """Ask the cache tier for stored vectors by their keys (`shared/cache/vectors.py`: one key per input)."""

    keys: list[str]


class VectorHits(Struct, frozen=True, kw_only=True, tag="vectors", tag_field="kind"):
    """The cache tier's answer to a `VectorLookup`: per key, the stored float32 vector or None."""

    vectors: list[bytes | None]


class VectorFill(Struct, frozen=True, kw_only=True):
    """Broadcast after an embeddings call: each input's vector under its own key, for every L1 (and one L2
    write), so a later batch holding some of these inputs calls the provider only for the others."""

    keys: list[str]
    vectors: list[bytes]


class SemanticFill(Struct, frozen=True, kw_only=True):
    """Broadcast by the cache replica that embedded a request once its answer was stored under `key`: every
    replica indexes `vector` (little-endian float32) under `partition` (`shared/cache/semantic.py`)."""

    key: str
    partition: str
    vector: bytes


Reply = (ChatResult | ErrorReply | StreamChunk | StreamEnd | CacheMiss | TokenCount | Delivered | EmbeddingResult
         | VectorHits)

# Module-level codecs: building an Encoder/Decoder per message costs more than using one.
_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(ChatRequest)
embedding_request_decoder = msgspec.msgpack.Decoder(EmbeddingRequest)
vector_lookup_decoder = msgspec.msgpack.Decoder(VectorLookup)
vector_fill_decoder = msgspec.msgpack.Decoder(VectorFill)
semantic_fill_decoder = msgspec.msgpack.Decoder(SemanticFill)
reply_decoder = msgspec.msgpack.Decoder(Reply)


def encode(message: Struct) -> bytes:
    return _encoder.encode(message)


class BreakerEvent(Struct, frozen=True, kw_only=True):
    """A router replica's news about `target`: its breaker changed `state` (every other replica adopts
    it), or, without a state, an observation every other replica counts: a call that `failed`, or the
    first that succeeded after failures, with the `successes` it saw since its last observation."""

    target: str
    origin: str
    state: Literal["closed", "open", "half_open"] | None = None
    failed: bool = False
    successes: int = 0


breaker_decoder = msgspec.msgpack.Decoder(BreakerEvent)


class HealthReport(Struct, frozen=True, kw_only=True):
    """One service instance's answer to a health probe."""

    service: str
    instance: str
    status: Literal["up", "degraded", "down"] = "up"
    checks: dict[str, str] = {}


health_decoder = msgspec.msgpack.Decoder(HealthReport)
