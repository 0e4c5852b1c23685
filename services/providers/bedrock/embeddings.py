"""Bedrock's embedding models through InvokeModel (`POST /model/{modelId}/invoke`), each in its own body.

Followed: docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html (Titan Text
Embeddings V2: one `inputText` a call, `dimensions` 1024/512/256, `normalize` defaulting to true; the answer's
`embedding` and `inputTextTokenCount`) and model-parameters-embed.html (Cohere Embed: `texts`, at most 96 a
call, `input_type` required by v3 models, `truncate`; the answer's `embeddings`, a list of float lists, or
with `embedding_types` an object of them by type). Cohere's body carries no token count: InvokeModel's
`X-Amzn-Bedrock-Input-Token-Count` response header does (API_runtime_InvokeModel.html).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from services.providers.base import bad_response
from shared.cache.vectors import pack
from shared.errors import InvalidRequest
from shared.messages import EmbeddingRequest, EmbeddingResult, Usage

COHERE_BATCH = 96
# Cohere v3 models refuse a call without `input_type`; documents to store are the common case.
COHERE_DEFAULT_INPUT_TYPE = "search_document"
TOKEN_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def is_cohere(model: str) -> bool:
    return "cohere.embed" in model


def batch_limit(model: str) -> int:
    return COHERE_BATCH if is_cohere(model) else 1  # Titan embeds one text a call


class _Extras(Struct):
    """The vendor extras a client may send (OpenAI SDK `extra_body`) that these bodies document."""

    input_type: str | None = None
    truncate: str | None = None
    normalize: bool | None = None


_extras_decoder = msgspec.json.Decoder(_Extras)
_encoder = msgspec.json.Encoder()


def request_body(request: EmbeddingRequest, model: str) -> bytes:
    texts = []
    for i, item in enumerate(request.input):
        if not isinstance(item, str):
            raise InvalidRequest(f"bedrock: `{model}` takes text, not token arrays.", param=f"input[{i}]",
                                 code="unsupported_input")
        texts.append(item)
    extras = _extras_decoder.decode(request.extra_json) if isinstance(request.extra_json, bytes) else _Extras()
    if is_cohere(model):
        body: dict[str, Any] = {"texts": texts, "input_type": extras.input_type or COHERE_DEFAULT_INPUT_TYPE}
        if extras.truncate is not None:
            body["truncate"] = extras.truncate
        return _encoder.encode(body)
    if len(texts) != 1:
        raise InvalidRequest(f"bedrock: `{model}` embeds one text a call.", param="input")
    body = {"inputText": texts[0]}
    if isinstance(request.dimensions, int):
        body["dimensions"] = request.dimensions
    if extras.normalize is not None:
        body["normalize"] = extras.normalize
    return _encoder.encode(body)


class _Titan(Struct, rename="camel"):
    embedding: list[float]
    input_text_token_count: int = 0


class _ByType(Struct):
    floats: list[list[float]] = msgspec.field(name="float")


class _Cohere(Struct):
    embeddings: list[list[float]] | _ByType


_titan_decoder = msgspec.json.Decoder(_Titan)
_cohere_decoder = msgspec.json.Decoder(_Cohere)


def parse_response(body: bytes, headers: Mapping[str, str], *, provider: str, model: str) -> EmbeddingResult:
    counted = {k.lower(): v for k, v in headers.items()}.get(TOKEN_COUNT_HEADER, "")
    tokens = int(counted) if counted.isdigit() else 0
    try:
        if is_cohere(model):
            cohere = _cohere_decoder.decode(body)
            lists = cohere.embeddings.floats if isinstance(cohere.embeddings, _ByType) else cohere.embeddings
            found = [pack(values) for values in lists]
        else:
            titan = _titan_decoder.decode(body)
            found = [pack(titan.embedding)]
            tokens = titan.input_text_token_count or tokens
    except msgspec.DecodeError as exc:
        raise bad_response(provider, str(exc)) from exc
    return EmbeddingResult(model=model, vectors=found, usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
                           provider=provider, target_model=model)
