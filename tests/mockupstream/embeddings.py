"""The mock upstream's embeddings, in each provider's wire format: OpenAI's `/v1/embeddings` (also Azure's
deployment and v1 routes, floats or base64), Gemini's `:embedContent` / `:batchEmbedContents`, and Bedrock's
InvokeModel for Titan Text Embeddings V2 (one `inputText`) and Cohere Embed (`texts`, at most 96, the token
count in `X-Amzn-Bedrock-Input-Token-Count`). Errors are each provider's own (`formats`, `gemini`, `bedrock`).

The vectors are deterministic: `vector(input, dimensions)`, values k/128 (exact in float32), so a test can
say which vector belongs to which input after the gateway split, cached and reassembled a batch.
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import msgspec

from tests.mockupstream import bedrock, gemini
from tests.mockupstream.formats import Dialect, Plan, Stream, encode, openai_error

DEFAULT_DIMENSIONS = 8
OPENAI_MAX_INPUTS = 2048
GEMINI_MAX_BATCH = 100
COHERE_MAX_TEXTS = 96


def vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    seed = hashlib.sha256(encode(item)).digest()
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        values += [(b - 128) / 128 for b in hashlib.sha256(seed + block.to_bytes(4, "little")).digest()]
        block += 1
    return values[:dimensions]


def tokens(item: str | list[int]) -> int:
    return len(item) if isinstance(item, list) else len(item.split())


@dataclass(frozen=True, slots=True)
class EmbedPlan(Plan):
    inputs: tuple[str | list[int], ...] = ()
    dimensions: int = DEFAULT_DIMENSIONS
    base64: bool = False
    batch: bool = False  # Gemini: batchEmbedContents (else embedContent)
    headers: dict[str, str] = field(default_factory=dict)  # response headers (Bedrock's token count)


def _plan(model: str, inputs: list[str | list[int]], dimensions: int | None, **more: Any) -> EmbedPlan:
    count = sum(tokens(item) for item in inputs)
    return EmbedPlan(model, False, False, "", None, count, 0, inputs=tuple(inputs),
                     dimensions=dimensions or DEFAULT_DIMENSIONS, **more)


def _no_stream(p: Plan, seq: int, chunks: int) -> Stream:
    raise AssertionError("embeddings are never streamed")


def _as_embed(p: Plan) -> EmbedPlan:
    assert isinstance(p, EmbedPlan)
    return p


# --- OpenAI (and Azure OpenAI) ------------------------------------------------------------------------------


class _OpenAIRequest(msgspec.Struct):
    model: str = ""
    input: str | list[str | int | list[int]] = ""
    encoding_format: str = "float"
    dimensions: int | None = None


_openai_decoder = msgspec.json.Decoder(_OpenAIRequest)


def _openai_plan(url: bytes, body: bytes) -> Plan:
    r = _openai_decoder.decode(body)
    raw = r.input
    if isinstance(raw, str):
        inputs: list[str | list[int]] = [raw]
    elif raw and all(isinstance(v, int) for v in raw):
        inputs = [[v for v in raw if isinstance(v, int)]]
    else:
        inputs = [v for v in raw if not isinstance(v, int)]
    if not inputs or len(inputs) > OPENAI_MAX_INPUTS or any(not item for item in inputs):
        raise msgspec.ValidationError("'$.input' is invalid. Please check the API reference.")
    return _plan(r.model, inputs, r.dimensions, base64=r.encoding_format == "base64")


def _openai_body(p: Plan, seq: int) -> bytes:
    e = _as_embed(p)
    data = []
    for i, item in enumerate(e.inputs):
        values = vector(item, e.dimensions)
        embedding: Any = (base64.b64encode(array("f", values).tobytes()).decode() if e.base64 else values)
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens}
    return encode({"object": "list", "data": data, "model": e.model, "usage": usage})


OPENAI = Dialect(_openai_plan, _openai_body, _no_stream, openai_error)

# --- Gemini -------------------------------------------------------------------------------------------------


class _Part(msgspec.Struct):
    text: str = ""


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _EmbedContent(msgspec.Struct, rename="camel"):
    content: _Content
    model: str | None = None
    output_dimensionality: int | None = None


class _BatchEmbed(msgspec.Struct):
    requests: list[_EmbedContent]


_single_decoder = msgspec.json.Decoder(_EmbedContent)
_batch_decoder = msgspec.json.Decoder(_BatchEmbed)


def _gemini_plan(url: bytes, body: bytes) -> Plan:
    path = url.split(b"?", 1)[0]
    model, _, method = unquote(path[len(b"/v1beta/models/"):].decode()).rpartition(":")
    if method == "embedContent":
        one = _single_decoder.decode(body)
        return _plan(model, [" ".join(p.text for p in one.content.parts)], one.output_dimensionality)
    batch = _batch_decoder.decode(body)
    if len(batch.requests) > GEMINI_MAX_BATCH:
        raise msgspec.ValidationError(f"* BatchEmbedContentsRequest.requests: at most {GEMINI_MAX_BATCH} "
                                      "requests can be in one batch")
    dims = {r.output_dimensionality for r in batch.requests}
    return _plan(model, [" ".join(p.text for p in r.content.parts) for r in batch.requests], dims.pop(),
                 batch=True)


def _gemini_body(p: Plan, seq: int) -> bytes:
    e = _as_embed(p)
    found = [{"values": vector(item, e.dimensions)} for item in e.inputs]
    return encode({"embeddings": found} if e.batch else {"embedding": found[0]})


GEMINI = Dialect(_gemini_plan, _gemini_body, _no_stream, gemini.error)

# --- Bedrock: Titan Text Embeddings V2 and Cohere Embed -----------------------------------------------------


class _Titan(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    input_text: str
    dimensions: int | None = None
    normalize: bool = True
    embedding_types: list[str] | None = None


class _Cohere(msgspec.Struct, forbid_unknown_fields=True):
    texts: list[str]
    input_type: str
    truncate: str | None = None
    embedding_types: list[str] | None = None
    images: list[str] | None = None


_titan_decoder = msgspec.json.Decoder(_Titan)
_cohere_decoder = msgspec.json.Decoder(_Cohere)


def _bedrock_plan(url: bytes, body: bytes) -> Plan:
    model = unquote(url.split(b"?", 1)[0][len(b"/model/"):].decode()).rpartition("/")[0]
    if "cohere.embed" in model:
        r = _cohere_decoder.decode(body)
        if len(r.texts) > COHERE_MAX_TEXTS:
            raise msgspec.ValidationError(f"Malformed input request: #/texts: expected maxItems: {COHERE_MAX_TEXTS}, "
                                          f"actual: {len(r.texts)}, please reformat your input and try again.")
        count = sum(tokens(t) for t in r.texts)
        return _plan(model, list(r.texts), None, headers={"X-Amzn-Bedrock-Input-Token-Count": str(count)})
    t = _titan_decoder.decode(body)
    return _plan(model, [t.input_text], t.dimensions)


def _bedrock_body(p: Plan, seq: int) -> bytes:
    e = _as_embed(p)
    if "cohere.embed" in e.model:
        found = [vector(item, e.dimensions) for item in e.inputs]
        return encode({"embeddings": found, "id": f"mock-{seq}", "response_type": "embeddings_floats",
                       "texts": list(e.inputs)})
    values = vector(e.inputs[0], e.dimensions)
    return encode({"embedding": values, "inputTextTokenCount": e.prompt_tokens,
                   "embeddingsByType": {"float": values}})


BEDROCK = Dialect(_bedrock_plan, _bedrock_body, _no_stream, bedrock.error, error_headers=bedrock.error_headers)


def dialect_for(path: bytes) -> Dialect | None:
    if path == b"/v1/embeddings" or path == b"/openai/v1/embeddings" or (
            path.startswith(b"/openai/deployments/") and path.endswith(b"/embeddings")):
        return OPENAI
    if path.startswith(b"/v1beta/models/") and path.endswith((b":embedContent", b":batchEmbedContents")):
        return GEMINI
    if path.startswith(b"/model/") and path.endswith(b"/invoke") and (b"embed" in path):
        return BEDROCK
    return None


def response_headers(p: Plan) -> dict[str, str]:
    return p.headers if isinstance(p, EmbedPlan) else {}
