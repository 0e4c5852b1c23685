"""Per-input keys of cached embedding vectors, and the float32 encoding every tier shares.

A vector is stored on its own, under a key over its *scope* (the tenant's namespace, the requested model and
`dimensions`) and the input (a text or a token array), so a batch where some inputs were seen before asks
the provider only for the others. The stored value is the vector as little-endian float32 bytes, whatever
encoding a client asked for (the edge encodes floats or base64 from it).
"""

from __future__ import annotations

import hashlib
import sys
from array import array

import msgspec

from shared.messages import EmbeddingInput, EmbeddingRequest

# Keys of vectors never look like the chat cache's (bare hex digests), so the two cannot collide in L1 or L2.
PREFIX = "vec:"
_canonical = msgspec.msgpack.Encoder()


def scope(request: EmbeddingRequest, namespace: str) -> str:
    """What, besides the input, decides a vector: the tenant, the model asked for, the dimensions."""
    dimensions = request.dimensions if isinstance(request.dimensions, int) else 0
    return hashlib.sha256(f"{namespace}\x00{request.model}\x00{dimensions}".encode()).hexdigest()


def key(scope_: str, item: EmbeddingInput) -> str:
    # A text and a token array never encode alike (msgpack str vs array), so neither can stand for the other.
    digest = hashlib.sha256(scope_.encode())
    digest.update(_canonical.encode(item))
    return PREFIX + digest.hexdigest()


def keys(scope_: str, inputs: list[EmbeddingInput]) -> list[str]:
    return [key(scope_, item) for item in inputs]


def pack(values: list[float]) -> bytes:
    """Floats as little-endian float32 bytes (what providers' float32 vectors are, and OpenAI's base64)."""
    packed = array("f", values)
    if sys.byteorder == "big":  # pragma: no cover - every platform we ship on is little-endian
        packed.byteswap()
    return packed.tobytes()


def unpack(vector: bytes) -> list[float]:
    values = array("f")
    values.frombytes(vector)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values.tolist()
