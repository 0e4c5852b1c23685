"""The mock provider's embeddings: a deterministic bag-of-words hashing embedding, L2-normalised.

Each word (lower case, a plural's `s` dropped, a few stop words skipped) adds ±1 at a position picked by
its hash, so two wordings that share most of their words have a high cosine and unrelated texts a low one:
what a semantic cache needs to be tested without a model. A token array hashes its token ids as words.
"""

from __future__ import annotations

import hashlib
import math
import re

from shared.cache.vectors import pack
from shared.messages import EmbeddingInput

DEFAULT_DIMENSIONS = 256
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset({"a", "an", "the", "is", "are", "of", "to", "in", "on", "for", "and", "or", "me", "please"})


def words(item: EmbeddingInput) -> list[str]:
    if isinstance(item, list):
        return [f"#{token}" for token in item]
    found = (w.removesuffix("s") if len(w) > 3 else w for w in _WORD.findall(item.lower()))
    return [w for w in found if w not in _STOP_WORDS]


def vector(item: EmbeddingInput, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    values = [0.0] * dimensions
    for word in words(item):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        values[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0:  # no words at all: one fixed unit vector, so the answer is still a direction
        values[0], norm = 1.0, 1.0
    return [v / norm for v in values]


def packed(item: EmbeddingInput, dimensions: int = DEFAULT_DIMENSIONS) -> bytes:
    return pack(vector(item, dimensions))


def tokens(item: EmbeddingInput) -> int:
    """The prompt tokens the mock charges: a token array's length, else about four characters a token."""
    return len(item) if isinstance(item, list) else max(1, (len(item) + 3) // 4)
