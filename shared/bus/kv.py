"""A JetStream key-value bucket as the ingress's shared store: every replica reads what any replica wrote.

The only place beside the rest of `shared/bus/` that touches `nats`: its errors become ours here (a bus that
cannot store is `Unavailable`, a missing key is `None`), so callers never see a nats exception.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shared.bus.connection import Bus
from shared.errors import Unavailable


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"The shared store on the bus is unavailable ({type(exc).__name__}).", code="store_unavailable")


_STORAGE = {"file": StorageType.FILE, "memory": StorageType.MEMORY}


class Bucket:
    """One bucket, created on first use with the retention it is given (entries expire after `ttl` s)."""

    def __init__(self, bus: Bus, name: str, ttl: float, storage: str = "file", timeout: float = 2.0) -> None:
        self.bus, self.name, self.ttl, self.storage, self.timeout = bus, name, ttl, storage, timeout
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._opening:
            if self._kv is None:
                js = self.bus.nc.jetstream(timeout=self.timeout)
                config = KeyValueConfig(bucket=self.name, ttl=self.ttl or None, storage=_STORAGE[self.storage],
                                        history=1)
                try:
                    self._kv = await js.create_key_value(config)
                except nats.js.errors.BadRequestError:  # it exists with other settings: use it as it is
                    self._kv = await js.key_value(self.name)
            return self._kv

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await (await self._bucket()).get(key)
        except nats.js.errors.KeyNotFoundError:  # deleted keys included
            return None
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc
        return entry.value

    async def put(self, key: str, value: bytes) -> None:
        try:
            await (await self._bucket()).put(key, value)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def delete(self, key: str) -> None:
        """Gone for good (purged, not only marked deleted), so nothing of it stays on the server."""
        try:
            await (await self._bucket()).purge(key)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc
