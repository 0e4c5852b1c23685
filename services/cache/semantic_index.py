"""The semantic index of one cache replica: per partition, a numpy float32 matrix of unit vectors, searched
with one matrix-vector product (cosine similarity, exact: no approximate index to tune or to miss).

Why this and not Redis: Redis 7.0 (Debian's) has no vector search, and a partition (one tenant, model,
parameter set, tool list) rarely holds more than thousands of entries, where a brute-force product costs
tens to hundreds of microseconds (docs/PERFORMANCE.md has the figures at 1k, 10k and 100k entries).
Every replica builds the same index from the same broadcast (`cache.fill.semantic`). Bounded: at most
`max_entries` over all partitions, least recently used first out, and at most `max_bytes` of vectors; an
entry also expires with its answer's TTL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict

# One BLAS thread: a lookup is one matrix-vector product (on the event loop's thread when small), and
# OpenBLAS's extra threads spin-wait for work on a busy machine (measured on the 2-core test box under
# load: 10k x 256 searched in 24 ms p50 with its default threads, 0.4 ms with one). It only takes effect
# when numpy is not loaded yet, which holds in the cache service (it loads numpy for the semantic cache).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
# A partition at least this large (rows x dimensions) is searched on another thread: ~2 ms of work and up.
OFFLOAD_ELEMENTS = 1 << 21
_INITIAL_ROWS = 16


class _Partition:
    """Rows 0..size-1 of `vectors` are live; `keys[i]` names row i. A removed row takes the last one's place."""

    __slots__ = ("expires", "keys", "rows", "vectors")

    def __init__(self, dimensions: int) -> None:
        self.vectors: Vector = np.empty((_INITIAL_ROWS, dimensions), dtype=np.float32)
        self.expires = np.empty(_INITIAL_ROWS, dtype=np.float64)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    def put(self, key: str, vector: Vector, expires: float) -> None:
        row = self.rows.get(key)
        if row is None:
            row = len(self.keys)
            if row == len(self.vectors):  # full: double, so n inserts cost O(n) copies in all
                self.vectors = np.resize(self.vectors, (row * 2, self.dimensions))
                self.expires = np.resize(self.expires, row * 2)
            self.keys.append(key)
            self.rows[key] = row
        self.vectors[row] = vector
        self.expires[row] = expires

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.vectors[row] = self.vectors[last]
            self.expires[row] = self.expires[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()
        capacity = len(self.vectors)
        if capacity > _INITIAL_ROWS and len(self.keys) < capacity // 4:  # give memory back after evictions
            self.vectors = self.vectors[: capacity // 2].copy()
            self.expires = self.expires[: capacity // 2].copy()


class SemanticIndex:
    def __init__(self, max_entries: int, max_bytes: int = 1 << 62) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # of the live entries' vectors (a partition's matrix may hold up to twice that)
        self._partitions: dict[str, _Partition] = {}
        self._lru: OrderedDict[str, str] = OrderedDict()  # entry key -> its partition, oldest first

    def __len__(self) -> int:
        return len(self._lru)

    def add(self, partition: str, key: str, vector: Vector, ttl: float, now: float | None = None) -> bool:
        """Index `key` (an exact cache key, whose answer L1/L2 hold) under `partition`; False when the vector
        cannot be compared (zero, or another dimension than the partition's)."""
        unit = _unit(vector)
        if unit is None or ttl <= 0 or self.max_entries <= 0 or unit.nbytes > self.max_bytes:
            return False
        owner = self._lru.get(key)
        if owner is not None and owner != partition:
            self.remove(key)
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(len(unit))
        elif part.dimensions != len(unit):
            return False
        if key not in part.rows:
            self.bytes += unit.nbytes
        part.put(key, unit, (time.monotonic() if now is None else now) + ttl)
        self._lru[key] = partition
        self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries or self.bytes > self.max_bytes:
            self.remove(next(iter(self._lru)))
        return True

    def search(self, partition: str, vector: Vector, threshold: float,
               now: float | None = None) -> tuple[str, float] | None:
        """The most similar live entry of `partition` when its cosine similarity is at least `threshold`."""
        if (found := self._query(partition, vector)) is None:
            return None
        part, unit = found
        now = time.monotonic() if now is None else now
        size = len(part.keys)
        return self._settle(partition, part, unit, _best(part.vectors[:size], part.expires[:size], unit, now),
                            threshold, now)

    async def search_async(self, partition: str, vector: Vector, threshold: float) -> tuple[str, float] | None:
        """`search`, with the product of a large partition on another thread (numpy lets go of the GIL): the
        event loop serves other lookups meanwhile. Rows may move under it (an add, a removal); the row found
        is checked again on the loop's thread, so the worst a race does is miss."""
        if (found := self._query(partition, vector)) is None:
            return None
        part, unit = found
        now = time.monotonic()
        size = len(part.keys)
        if size * part.dimensions < OFFLOAD_ELEMENTS:
            row = _best(part.vectors[:size], part.expires[:size], unit, now)
        else:
            row = await asyncio.to_thread(_best, part.vectors[:size], part.expires[:size], unit, now)
        return self._settle(partition, part, unit, row, threshold, now)

    def _query(self, partition: str, vector: Vector) -> tuple[_Partition, Vector] | None:
        part = self._partitions.get(partition)
        unit = _unit(vector)
        if part is None or unit is None or part.dimensions != len(unit):
            return None
        return part, unit

    def _settle(self, partition: str, part: _Partition, unit: Vector, row: int | None, threshold: float,
                now: float) -> tuple[str, float] | None:
        """The entry at `row` if it is (still) live and close enough; expired entries leave on the way."""
        if self._partitions.get(partition) is not part:
            return None  # emptied (and perhaps made again) while the product ran
        size = len(part.keys)
        key, similarity = None, -1.0
        if row is not None and row < size and part.expires[row] > now:
            key, similarity = part.keys[row], float(part.vectors[row] @ unit)
        for gone in [part.keys[i] for i in np.flatnonzero(part.expires[:size] <= now)]:
            self.remove(gone)
        if key is None or similarity < threshold:
            return None
        self._lru.move_to_end(key)
        return key, min(similarity, 1.0)

    def remove(self, key: str) -> None:
        partition = self._lru.pop(key, None)
        if partition is None:
            return
        part = self._partitions[partition]
        part.remove(key)
        self.bytes -= part.dimensions * 4
        if not part.keys:
            del self._partitions[partition]


def _best(vectors: Vector, expires: npt.NDArray[np.float64], unit: Vector, now: float) -> int | None:
    """The row of the live vector closest to `unit`, or None when no row is live."""
    if not len(vectors):
        return None
    scores = vectors @ unit
    expired = expires <= now
    if expired.any():
        scores[expired] = -np.inf
    best = int(np.argmax(scores))
    return None if scores[best] == -np.inf else best


def _unit(vector: Vector) -> Vector | None:
    norm = float(np.linalg.norm(vector))
    if not norm > 0 or not np.isfinite(norm):
        return None
    return (vector / norm).astype(np.float32, copy=False)
