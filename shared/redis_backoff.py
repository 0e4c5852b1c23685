"""Redis calls that never fail or stall the request they serve: each bounded by a timeout, a failure
answered with the caller's fallback and followed by a short back-off in which Redis is left alone, instead
of each request paying the timeout again. Health changes are logged once each way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

T = TypeVar("T")

BACKOFF_SECONDS = 1.0


class RedisBackoff:
    def __init__(self, url: str, timeout: float, log: logging.Logger, down: str, up: str) -> None:
        """`down` is logged (with the exception's type) when Redis stops answering, `up` when it is back."""
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._timeout = timeout
        self._log = log
        self._down = down
        self._up = up
        self._down_until = 0.0
        self.healthy = True

    async def call(self, make: Callable[[], Awaitable[T]], fallback: T, *, probe: bool = False) -> T:
        """`make()`'s result, or `fallback` when Redis fails or is being left alone; a `probe` (health
        check) asks Redis even during the back-off."""
        if not probe and self.backing_off():
            return fallback
        try:
            result = await asyncio.wait_for(make(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return fallback
        self._ok()
        return result

    def backing_off(self) -> bool:
        return not self.healthy and time.monotonic() < self._down_until

    async def close(self) -> None:
        await self.client.aclose()

    def _failed(self, exc: BaseException) -> None:
        if self.healthy:
            self._log.warning("%s: %s", self._down, type(exc).__name__)
        self.healthy = False
        self._down_until = time.monotonic() + BACKOFF_SECONDS

    def _ok(self) -> None:
        if not self.healthy:
            self._log.info(self._up)
        self.healthy = True
