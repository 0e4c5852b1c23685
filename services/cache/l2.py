"""L2: Redis with a TTL per entry. Redis being down or slow never fails a request: L2 turns into a
miss, health reports it degraded, and calls are skipped for a short back-off instead of each one
paying the timeout.
"""

from __future__ import annotations

import logging

from shared.redis_backoff import RedisBackoff

log = logging.getLogger("llm_edge.cache.l2")


class L2Cache:
    def __init__(self, url: str, timeout: float, prefix: str) -> None:
        self._redis = RedisBackoff(
            url, timeout, log, down="redis unavailable, serving L1 only", up="redis is back"
        )
        self._prefix = f"{prefix}:cache:"

    @property
    def healthy(self) -> bool:
        return self._redis.healthy

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.call(lambda: self._redis.client.get(self._prefix + key), None)
        return value if isinstance(value, bytes) else None  # the client decodes nothing: bytes or None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        await self._redis.call(
            lambda: self._redis.client.set(self._prefix + key, value, px=int(ttl * 1000)), None
        )

    async def ping(self) -> bool:
        async def ping() -> bool:
            await self._redis.client.ping()
            return True

        return await self._redis.call(ping, False, probe=True)

    async def close(self) -> None:
        await self._redis.close()
