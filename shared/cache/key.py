"""Cache keys: SHA-256 over a canonical encoding of everything that changes a model's answer.

`stream`, `stream_options`, `user` and `metadata` never change the answer and are left out; the
namespace (the caller's tenant) is part of the key, so tenants never read each other's answers.
"""

from __future__ import annotations

import hashlib

import msgspec

from shared.messages import NON_SEMANTIC_FIELDS, ChatRequest

# Sorted map keys make the encoding canonical whatever order a client sent them in.
_canonical = msgspec.msgpack.Encoder(order="sorted")
_CLEARED = dict.fromkeys(NON_SEMANTIC_FIELDS, msgspec.UNSET)


def cache_key(request: ChatRequest, namespace: str) -> str:
    semantic = msgspec.structs.replace(request, **_CLEARED)
    digest = hashlib.sha256(namespace.encode())
    digest.update(b"\x00")
    digest.update(_canonical.encode(semantic))
    return digest.hexdigest()
