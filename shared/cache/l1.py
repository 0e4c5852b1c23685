"""L1: an in-process LRU with a TTL per entry, bounded both in entries and in bytes."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping

from shared.subjects import Headers


class L1Cache:
    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float | None = None) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= (time.monotonic() if now is None else now):
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, ttl: float, now: float | None = None) -> bool:
        """Store `value`; False when it alone is larger than the whole cache (not stored)."""
        size = len(value) + len(key)
        if size > self.max_bytes or ttl <= 0:
            return False
        if key in self._items:
            self._remove(key)
        self._items[key] = (value, (time.monotonic() if now is None else now) + ttl)
        self.bytes += size
        while self.bytes > self.max_bytes or len(self._items) > self.max_entries:
            oldest = next(iter(self._items))
            self._remove(oldest)
        return True

    def _remove(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.bytes -= len(value) + len(key)


def fill_ttl(headers: Mapping[str, str], default: float) -> float:
    """A fill's time to live: its `Llm-Cache-Ttl` header, or `default` when absent, unreadable, not finite
    or over a year; under a millisecond is 0 (expired at once, never written to Redis)."""
    value = headers.get(Headers.CACHE_TTL)
    if value is None:
        return default
    try:
        ttl = float(value)
    except ValueError:
        return default
    # The ingress refuses other values; a fill from elsewhere on the bus must not write what never expires
    # (nan, inf, beyond a year: the default instead), nor a TTL Redis refuses (under a millisecond: 0,
    # which stores nothing).
    if not ttl <= 365 * 24 * 3600.0:  # true for nan as well
        return default
    return ttl if ttl >= 0.001 else 0.0
