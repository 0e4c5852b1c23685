"""OpenAI's `POST /v1/embeddings` at the edge: the body as an `EmbeddingRequest`, each input's vector from the
cache when it is there, the others from the router (`llm.embed`) in one call, the answer in input order as
floats or base64 (little-endian float32, as OpenAI encodes it).

Followed: platform.openai.com/docs/api-reference/embeddings/create (`input`: a string, an array of strings, an
array of tokens or an array of token arrays, at most 2048 of them, none empty; `encoding_format`: `float` or
`base64`; `dimensions`; `user`) and its response object (`{"object": "list", "data": [{"object":
"embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}`).
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from starlette.requests import Request
from starlette.responses import Response

from services.ingress.context import Call
from services.ingress.gateway import Gateway, route, unless_client_leaves
from services.ingress.parse import decode_body, invalid
from services.ingress.responses import JSON
from shared import bus, metrics
from shared.cache import vectors
from shared.errors import DeadlineExceeded, InternalError, InvalidRequest, from_reply
from shared.messages import (
    Dimensions,
    EmbeddingInput,
    EmbeddingRequest,
    EmbeddingResult,
    ErrorReply,
    NonEmptyStr,
    Usage,
    VectorHits,
    VectorLookup,
    encode,
)
from shared.subjects import Headers

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request
_L1 = metrics.Lookup("l1")

# --- the HTTP body ------------------------------------------------------------------------------------------

# A token id (OpenAI's vocabularies are far smaller); bounded so that it always fits the bus's msgpack.
TokenId = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class EmbeddingsBody(Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    model: NonEmptyStr
    input: str | list[str | TokenId | list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | UnsetType = UNSET
    user: str | UnsetType = UNSET


_body_decoder = msgspec.json.Decoder(EmbeddingsBody)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_KNOWN = frozenset(EmbeddingsBody.__struct_fields__)


def parse(body: bytes) -> tuple[EmbeddingRequest, Literal["float", "base64"]]:
    """The bus request and the encoding the client wants; a 400 naming the field for anything OpenAI refuses."""
    fields = decode_body(_fields_decoder, body, invalid)
    extras = {name: raw for name, raw in fields.items() if name not in _KNOWN}
    parsed = decode_body(_body_decoder, body, invalid)
    request = EmbeddingRequest(
        model=parsed.model, input=inputs(parsed.input), dimensions=parsed.dimensions, user=parsed.user,
        extra_json=msgspec.json.encode(extras) if extras else UNSET)
    return request, parsed.encoding_format


def inputs(value: str | list[str | int | list[int]]) -> list[EmbeddingInput]:
    """`input` as one entry per vector: a string, strings, one token array, or token arrays."""
    if isinstance(value, str):
        items: list[EmbeddingInput] = [value]
    elif not value:
        raise InvalidRequest("`input` must not be empty.", param="input")
    elif all(isinstance(v, int) for v in value):
        items = [[v for v in value if isinstance(v, int)]]  # one token array
    elif all(isinstance(v, str) for v in value) or all(isinstance(v, list) for v in value):
        items = [v for v in value if not isinstance(v, int)]
    else:
        raise InvalidRequest("`input` must be a string, an array of strings, an array of tokens or an array of "
                             "token arrays, not a mixture.", param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"`input` holds {len(items)} inputs; at most {MAX_INPUTS} are allowed.", param="input")
    for i, item in enumerate(items):
        if not item:
            where = "input" if isinstance(value, str) else f"input[{i}]"
            raise InvalidRequest(f"`{where}` must not be empty.", param=where)
    return items


# --- the HTTP answer ----------------------------------------------------------------------------------------


class _Embedding(Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class _Usage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class _EmbeddingList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[_Embedding]
    model: str
    usage: _Usage


_json = msgspec.json.Encoder()


def render(found: list[bytes], model: str, usage: Usage, encoding: Literal["float", "base64"]) -> bytes:
    if encoding == "base64":
        data = [_Embedding(index=i, embedding=base64.b64encode(v).decode("ascii")) for i, v in enumerate(found)]
    else:
        data = [_Embedding(index=i, embedding=vectors.unpack(v)) for i, v in enumerate(found)]
    return _json.encode(_EmbeddingList(data=data, model=model, usage=_Usage(
        prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens)))


# --- the endpoint -------------------------------------------------------------------------------------------


async def create_embeddings(call: Call, request: Request, body: bytes) -> Response:
    """The request accepted (id, caller, body): keys and limits as for chat, the cache per input, the router
    for the rest."""
    gateway, grant, rid = call.gateway, call.grant, call.rid or ""
    embedding, encoding = parse(body)
    gateway.routes.resolve(embedding.model)  # 404 for an unknown model before any bus hop
    call.model, call.operation = embedding.model, "embeddings"
    timeout = gateway.timeout(request)
    namespace = "default" if grant is None else await gateway.admit(request, grant, embedding.model)
    deadline = time.monotonic() + timeout
    headers = gateway.bus_headers(request, rid, time.time() + timeout, namespace)
    found, tier = await lookup(gateway, embedding, namespace, headers, timeout)
    missing = [i for i, vector in enumerate(found) if vector is None]
    call.cache = "miss" if len(missing) == len(found) else tier if not missing else "partial"
    model, usage, cost, provider, target = embedding.model, Usage(), 0.0, "cache", ""
    call.provider_seconds = 0.0
    if missing:
        asked = embedding if len(missing) == len(found) else msgspec.structs.replace(
            embedding, input=[embedding.input[i] for i in missing])
        payload = encode(asked)
        gateway.check_fits(payload)
        result = await unless_client_leaves(request, embed(gateway, payload, headers, deadline))
        for i, vector in zip(missing, result.vectors, strict=True):
            found[i] = vector
        model, usage, cost, provider = result.model, result.usage, result.cost_usd, result.provider
        target = result.target_model
        call.provider_seconds = result.provider_seconds
        gateway.charge(grant, embedding.model, usage, cost)  # spend and limits; cached vectors cost nothing
    call.provider = provider
    complete = [vector for vector in found if vector is not None]
    elapsed_ms = (time.perf_counter() - call.started) * 1000
    return Response(render(complete, model, usage, encoding), media_type=JSON, headers={
        "x-request-id": rid,
        "x-llm-edge-provider": provider,
        "x-llm-edge-model": target,  # the provider's model, when one was called
        "x-llm-edge-cache": call.cache,
        "x-llm-edge-cached-inputs": str(len(found) - len(missing)),
        "x-llm-edge-latency-ms": f"{elapsed_ms:.2f}",
        "x-llm-edge-cost-usd": f"{cost:.8f}",
    })


async def lookup(gateway: Gateway, embedding: EmbeddingRequest, namespace: str, headers: dict[str, str],
                 timeout: float) -> tuple[list[bytes | None], str]:
    """Each input's stored vector or None, and where the hits came from (`hit-l1`: this ingress, `hit-l2`:
    the cache service). With the cache on (and no `no-store`), the key scope goes in `Llm-Cache-Key`, so
    the router broadcasts the new vectors to every cache tier."""
    found: list[bytes | None] = [None] * len(embedding.input)
    settings = gateway.config.cache
    control = headers.get(Headers.CACHE_CONTROL, "")
    if not settings.enabled:
        return found, "miss"
    scope = vectors.scope(embedding, namespace)
    if "no-store" not in control:
        headers[Headers.CACHE_KEY] = scope
    if "no-cache" in control:
        return found, "miss"
    keys = vectors.keys(scope, embedding.input)
    if gateway.l1 is not None:
        found = [gateway.l1.get(key) for key in keys]
    missing = [i for i, vector in enumerate(found) if vector is None]
    if gateway.l1 is not None:  # counted per input, as the cache service counts its own
        _L1.hits(len(found) - len(missing))
        _L1.misses(len(missing))
    if not missing or not gateway.ask_cache_service:
        return found, "hit-l1"
    asking = VectorLookup(keys=[keys[i] for i in missing])
    try:
        reply, _ = await gateway.bus().request(gateway.subjects.vector_lookup, encode(asking), headers,
                                               min(settings.lookup_timeout_seconds, timeout))
    except (bus.NoResponders, DeadlineExceeded):
        return found, "hit-l1"  # the cache is optional: no instance, or too slow, means a miss
    if isinstance(reply, VectorHits) and len(reply.vectors) == len(missing):
        for i, vector in zip(missing, reply.vectors, strict=True):
            found[i] = vector
        if any(vector is not None for vector in reply.vectors):
            return found, "hit-l2"
    return found, "hit-l1"


async def embed(gateway: Gateway, payload: bytes, headers: dict[str, str], deadline: float) -> EmbeddingResult:
    """Ask a router for the vectors, as chat asks for an answer (`route`: a silent router is replaced once)."""
    match await route(gateway, payload, headers, deadline, gateway.subjects.embed):
        case EmbeddingResult() as reply:
            return reply
        case ErrorReply() as reply:
            raise from_reply(reply)
        case _:
            raise InternalError("unexpected reply on the bus")
