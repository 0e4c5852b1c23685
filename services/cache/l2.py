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

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Each key's value or None (one MGET); every one None when Redis is down."""
        values = await self._redis.call(lambda: self._redis.client.mget([self._prefix + k for k in keys]), None)
        if not isinstance(values, list):
            return [None] * len(keys)
        return [v if isinstance(v, bytes) else None for v in values]

    async def put_many(self, items: list[tuple[str, bytes]], ttl: float) -> None:
        """Each value under its key with one TTL, in one round trip (a pipeline without a transaction)."""
        if ttl <= 0 or not items:
            return

        async def write() -> None:
            pipe = self._redis.client.pipeline(transaction=False)
            for k, value in items:
                pipe.set(self._prefix + k, value, px=int(ttl * 1000))
            await pipe.execute()

        await self._redis.call(write, None)

    async def ping(self) -> bool:
        async def ping() -> bool:
            await self._redis.client.ping()
            return True

        return await self._redis.call(ping, False, probe=True)

    async def close(self) -> None:
        await self._redis.close()
