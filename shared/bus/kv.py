"""A JetStream key-value bucket as the ingress's shared store: every replica reads what any replica wrote.

The only place beside the rest of `shared/bus/` that touches `nats`: its errors become ours here (a bus that
cannot store is `Unavailable`, a missing key is `None`), so callers never see a nats exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue, StopIterSentinel

from shared.bus.connection import Bus
from shared.errors import Conflict, Unavailable

_FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
_GONE = ("DEL", "PURGE")  # KV-Operation of a deleted or purged key


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"The shared store on the bus is unavailable ({type(exc).__name__}).", code="store_unavailable")


_STORAGE = {"file": StorageType.FILE, "memory": StorageType.MEMORY}


class Entry(NamedTuple):
    """A key's value and its revision (what `update` expects back); `value` is None once it was deleted."""

    key: str
    value: bytes | None
    revision: int


class Bucket:
    """One bucket, created on first use with the retention it is given (entries expire after `ttl` s; 0:
    never) on `replicas` servers of a cluster."""

    def __init__(self, bus: Bus, name: str, ttl: float, storage: str = "file", timeout: float = 2.0,
                 replicas: int = 1) -> None:
        self.bus, self.name, self.ttl, self.storage, self.timeout = bus, name, ttl, storage, timeout
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._opening:
            if self._kv is None:
                js = self.bus.nc.jetstream(timeout=self.timeout)
                config = KeyValueConfig(bucket=self.name, ttl=self.ttl or None, storage=_STORAGE[self.storage],
                                        history=1, replicas=self.replicas)
                try:
                    self._kv = await js.create_key_value(config)
                except nats.js.errors.BadRequestError:  # it exists with other settings: use it as it is
                    self._kv = await js.key_value(self.name)
            return self._kv

    async def _written(self, write: Callable[[KeyValue], Awaitable[int]]) -> int:
        """A write; when the bucket's stream is gone (lost with a server's storage, deleted), it is made
        again and the write tried once more."""
        try:
            return await write(await self._bucket())
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            self._kv = None
        return await write(await self._bucket())

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await (await self._bucket()).get(key)
        except nats.js.errors.KeyNotFoundError:  # deleted keys included
            return None
        except _FAILURES as exc:
            raise self._lost(exc) from exc
        return entry.value

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._written(lambda kv: kv.put(key, value))
        except _FAILURES as exc:
            raise self._lost(exc) from exc

    async def delete(self, key: str) -> None:
        """Gone for good (purged, not only marked deleted), so nothing of it stays on the server."""
        try:
            await (await self._bucket()).purge(key)
        except _FAILURES as exc:
            raise self._lost(exc) from exc

    async def entry(self, key: str) -> Entry | None:
        """The key's value with its revision, or None."""
        try:
            found = await (await self._bucket()).get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except _FAILURES as exc:
            raise self._lost(exc) from exc
        return Entry(key, found.value or b"", found.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        """Store `value` under a key that does not exist yet (atomic: of two replicas creating it, one
        wins); raises Conflict when it exists. Returns the revision."""
        try:
            return await self._written(lambda kv: kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"'{key}' exists already.") from exc
        except _FAILURES as exc:
            raise self._lost(exc) from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Replace the value only if it is still at `revision` (Conflict otherwise: someone else wrote)."""
        try:
            return await self._written(lambda kv: kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"'{key}' was changed meanwhile; read it again.") from exc
        except _FAILURES as exc:
            raise self._lost(exc) from exc

    async def entries(self, prefix: str) -> list[Entry]:
        """Every live key under `prefix` (a dot-separated token prefix) with its value, as of now."""
        found: list[Entry] = []
        try:
            watcher = await (await self._bucket()).watch(f"{prefix}>", ignore_deletes=True)
            try:
                while (update := await watcher.updates(self.timeout)) is not None:
                    found.append(Entry(update.key, update.value or b"", update.revision or 0))
            finally:
                await watcher.stop()
        except _FAILURES as exc:
            raise self._lost(exc) from exc
        return found

    async def revision(self) -> int:
        """The bucket's latest revision (of any key): what a watch that missed nothing has seen last."""
        try:
            status = await (await self._bucket()).status()
        except _FAILURES as exc:
            raise self._lost(exc) from exc
        return int(status.stream_info.state.last_seq)

    async def watch(self, prefix: str = "", idle: float = 5.0) -> AsyncIterator[Entry | None]:
        """Every key under `prefix` as it is now, then None (the initial values are all there), then each
        change as it happens (a deletion as an entry whose value is None), and None again after each `idle`
        seconds without one, for as long as it is iterated.

        nats-py's ordered consumer under it recreates itself from the last revision seen when it misses
        heartbeats (a restarted server); a bucket lost with its server's storage is not noticed by it: the
        caller compares `revision()` with what it has seen on the idle ticks. Setting up, it raises
        Unavailable."""
        try:
            watcher = await (await self._bucket()).watch(f"{prefix}>" if prefix else ">")
        except _FAILURES as exc:
            raise self._lost(exc) from exc
        try:
            while True:
                try:
                    update = await watcher.updates(idle)
                except nats.errors.TimeoutError:
                    yield None
                    continue
                if isinstance(update, StopIterSentinel):
                    return
                if update is None:
                    yield None
                    continue
                gone = update.operation in _GONE
                yield Entry(update.key, None if gone else update.value or b"", update.revision or 0)
        finally:
            with contextlib.suppress(*_FAILURES):  # the connection is gone: so is the subscription
                await watcher.stop()

    def _lost(self, exc: BaseException) -> Unavailable:
        """A failure: the next call opens the bucket again (and makes it again if it was lost)."""
        self._kv = None
        return _unavailable(exc)
