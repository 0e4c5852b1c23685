"""Gemini's embeddings: one input as `models/{model}:embedContent`, several as `:batchEmbedContents`.

Followed: ai.google.dev/api/embeddings (`EmbedContentRequest`: `content` whose `parts.text` is embedded,
`taskType`, `title`, `outputDimensionality`; `EmbedContentResponse`: `embedding.values`;
`BatchEmbedContentsRequest.requests`, each naming its `model` as `models/{model}`, answered by `embeddings` in
the same order, at most 100 a batch). The answer carries no token count (the worker estimates one).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from services.providers.base import bad_response
from shared.cache.vectors import pack
from shared.errors import InvalidRequest
from shared.messages import EmbeddingRequest, EmbeddingResult, Usage

MAX_BATCH = 100


class _Extras(Struct):
    """Vendor extras a client may send (OpenAI SDK `extra_body`) that Gemini documents, in either spelling."""

    task_type: str | None = None
    taskType: str | None = None
    title: str | None = None


_extras_decoder = msgspec.json.Decoder(_Extras)
_encoder = msgspec.json.Encoder()


def _one(text: str, request: EmbeddingRequest, extras: _Extras) -> dict[str, Any]:
    body: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
    if task := extras.task_type or extras.taskType:
        body["taskType"] = task
    if extras.title is not None:
        body["title"] = extras.title
    if isinstance(request.dimensions, int):
        body["outputDimensionality"] = request.dimensions
    return body


def request(request: EmbeddingRequest, model: str) -> tuple[str, bytes]:
    """The method (`embedContent` or `batchEmbedContents`) and its body."""
    texts = []
    for i, item in enumerate(request.input):
        if not isinstance(item, str):
            raise InvalidRequest("gemini: embeddings take text, not token arrays.", param=f"input[{i}]",
                                 code="unsupported_input")
        texts.append(item)
    extras = _extras_decoder.decode(request.extra_json) if isinstance(request.extra_json, bytes) else _Extras()
    if len(texts) == 1:
        return "embedContent", _encoder.encode(_one(texts[0], request, extras))
    requests = [{"model": f"models/{model}", **_one(text, request, extras)} for text in texts]
    return "batchEmbedContents", _encoder.encode({"requests": requests})


class _Values(Struct):
    values: list[float]


class _Single(Struct):
    embedding: _Values


class _Batch(Struct):
    embeddings: list[_Values]


_single_decoder = msgspec.json.Decoder(_Single)
_batch_decoder = msgspec.json.Decoder(_Batch)


def parse_response(body: bytes, *, provider: str, model: str, inputs: int) -> EmbeddingResult:
    try:
        found = ([_single_decoder.decode(body).embedding] if inputs == 1
                 else _batch_decoder.decode(body).embeddings)
    except msgspec.DecodeError as exc:
        raise bad_response(provider, str(exc)) from exc
    return EmbeddingResult(model=model, vectors=[pack(v.values) for v in found], usage=Usage(),
                           provider=provider, target_model=model)

