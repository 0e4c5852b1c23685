"""Refreshing run-time credentials (a cloud credential chain's), one refresh at a time, never on the event loop:
botocore's and google-auth's refreshes are blocking HTTP calls and run in a thread (azure-identity's async
credentials are awaited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from shared.errors import ProviderError

RETRY_SECONDS = 5.0


class Refresher:
    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._failure: ProviderError | None = None

    async def run(self, needed: Callable[[], bool], refresh: Callable[[], None]) -> None:
        """Run the blocking `refresh` in a thread if `needed()` (see `run_async`)."""
        await self.run_async(needed, lambda: asyncio.to_thread(refresh))

    async def run_async(self, needed: Callable[[], bool], refresh: Callable[[], Awaitable[None]]) -> None:
        """Await `refresh()` if `needed()`; the calls that arrive meanwhile wait for it. After a try that
        failed, or left `needed()` true (a library that keeps a still-valid set when its refresh fails),
        there is no new try for `retry_seconds`, so that calls do not queue behind one more try each while a
        credential service is down: the failure is raised again, or the kept set used."""
        if not needed():
            return
        async with self._lock:
            if not needed():
                return
            if time.monotonic() < self._retry_at:
                if self._failure is not None:
                    failure = self._failure
                    raise ProviderError(failure.message, code=failure.code, where=failure.where)
                return
            try:
                await refresh()
            except ProviderError as exc:
                self._failure, self._retry_at = exc, time.monotonic() + self.retry_seconds
                raise
            self._failure = None
            self._retry_at = time.monotonic() + self.retry_seconds if needed() else 0.0
