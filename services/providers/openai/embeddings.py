"""OpenAI's embeddings wire format (`POST {base}/embeddings`), shared by OpenAI, Azure OpenAI and any
OpenAI-compatible server.

Followed: OpenAI's OpenAPI spec (`openai/openai-openapi`, `createEmbedding`, `CreateEmbeddingRequest`,
`CreateEmbeddingResponse`, `Embedding`): at most 2048 inputs a request; each `data` item carries its `index`
and its `embedding`, a float array or (`encoding_format: base64`) the little-endian float32 bytes in base64.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from services.providers.base import bad_response, splice_extras
from shared.cache.vectors import pack
from shared.messages import EmbeddingInput, EmbeddingRequest, EmbeddingResult, Usage

MAX_INPUTS = 2048


class _Body(Struct, omit_defaults=True):
    model: str
    input: list[EmbeddingInput]
    encoding_format: str
    dimensions: int | UnsetType = UNSET
    user: str | UnsetType = UNSET


class _Item(Struct):
    embedding: list[float] | str
    index: int = 0


class _Usage(Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class _Response(Struct):
    data: list[_Item]
    model: str = ""
    usage: _Usage | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Response)
_MODELED = frozenset(_Body.__struct_fields__)


def request_body(request: EmbeddingRequest, model: str, encoding: Literal["float", "base64"]) -> bytes:
    body = _encoder.encode(_Body(model=model, input=request.input, encoding_format=encoding,
                                 dimensions=request.dimensions, user=request.user))
    if isinstance(request.extra_json, bytes):  # vendor extras go to OpenAI-shaped servers as sent
        body = splice_extras(body, request.extra_json, lambda key: key not in _MODELED)
    return body


def parse_response(body: bytes, *, provider: str, model: str) -> EmbeddingResult:
    try:
        response = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise bad_response(provider, str(exc)) from exc
    items = sorted(response.data, key=lambda item: item.index)
    if [item.index for item in items] != list(range(len(items))):
        raise bad_response(provider, "the embeddings' indexes are not 0..n-1")
    usage = response.usage or _Usage()
    return EmbeddingResult(
        model=response.model or model,
        vectors=[vector(item.embedding, provider) for item in items],
        usage=Usage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens or usage.prompt_tokens),
        provider=provider,
        target_model=model,
    )


def vector(embedding: list[float] | str, provider: str) -> bytes:
    if isinstance(embedding, list):
        return pack(embedding)
    try:
        data = base64.b64decode(embedding, validate=True)
    except binascii.Error as exc:
        raise bad_response(provider, "an embedding is not valid base64") from exc
    if len(data) % 4:
        raise bad_response(provider, "a base64 embedding is not whole float32 values")
    return data

