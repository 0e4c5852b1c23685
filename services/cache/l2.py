"""L2: Redis with a TTL per entry. Redis being down or slow never fails a request: L2 turns into a
miss, health reports it degraded, and calls are skipped for a short back-off instead of each one
paying the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("llm_edge.cache.l2")

BACKOFF_SECONDS = 1.0


class L2Cache:
    def __init__(self, url: str, timeout: float, prefix: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._timeout = timeout
        self._prefix = f"{prefix}:cache:"
        self._down_until = 0.0
        self.healthy = True

    async def get(self, key: str) -> bytes | None:
        if self._backing_off():
            return None
        try:
            value = await asyncio.wait_for(self._redis.get(self._prefix + key), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._ok()
        return value if isinstance(value, bytes) else None  # the client decodes nothing: bytes or None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if self._backing_off() or ttl <= 0:
            return
        try:
            await asyncio.wait_for(
                self._redis.set(self._prefix + key, value, px=int(ttl * 1000)), self._timeout
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def close(self) -> None:
        await self._redis.aclose()

    def _backing_off(self) -> bool:
        return not self.healthy and time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.healthy:
            log.warning("redis unavailable, serving L1 only: %s", type(exc).__name__)
        self.healthy = False
        self._down_until = time.monotonic() + BACKOFF_SECONDS

    def _ok(self) -> None:
        if not self.healthy:
            log.info("redis is back")
        self.healthy = True
