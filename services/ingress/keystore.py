"""API keys created at run time (through the admin API), kept in a JetStream key-value bucket that every
ingress replica watches: a key created, changed, rotated or revoked on one replica takes effect on all of
them as the change reaches their watch (milliseconds), with no restart.

Entries: `keys.<name>` holds a key's record (its settings and the SHA-256 digest of its secret; the secret
itself is never stored); `digests.<sha256>` names the key a digest belongs to, so a replica that has not
heard of a brand-new key yet finds it with one read instead of refusing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable

import msgspec
from msgspec import Struct

from shared.bus.kv import Bucket
from shared.config import ApiKey
from shared.errors import GatewayError, InvalidRequest, NotFound

log = logging.getLogger("llm_edge.ingress.keys")

SECRET_PREFIX = "sk-edge-"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_RECORDS, _DIGESTS = "keys.", "digests."
_RETRY_SECONDS = 1.0
_IDLE_SECONDS = 5.0  # a quiet watch checks this often that it has missed nothing


class StoredKey(Struct, frozen=True, kw_only=True):
    """A key's record in the bucket: what the configuration file would say about it, and when."""

    key: ApiKey
    created_at: int  # unix seconds
    updated_at: int
    rotated_at: int | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StoredKey).decode


def new_secret() -> str:
    """A key's secret: 256 random bits, url-safe, with a prefix that says whose key it is."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def not_found(name: str) -> NotFound:
    return NotFound(f"No key named '{name}'.", code="key_not_found")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest("A key's name is 1 to 64 letters, digits, `_` or `-`, starting with a letter or "
                             "digit.", param="name", code="invalid_key_name")
    return name


class KeyStore:
    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self._failing = False  # the last watch failed (logged once)

    async def get(self, name: str) -> tuple[StoredKey, int] | None:
        """The key's record and its revision, or None."""
        if not NAME.match(name):
            return None
        entry = await self.bucket.entry(_RECORDS + name)
        return None if entry is None or entry.value is None else (_decode(entry.value), entry.revision)

    async def list(self) -> list[StoredKey]:
        records = [_decode(entry.value) for entry in await self.bucket.entries(_RECORDS) if entry.value]
        return sorted(records, key=lambda record: record.key.name)

    async def create(self, key: ApiKey) -> tuple[StoredKey, str]:
        """Store a new key under `key.name` (Conflict when the name is taken) with a fresh secret; returns
        the record and the secret, which exists nowhere else from now on."""
        secret = new_secret()
        now = int(time.time())
        record = StoredKey(key=msgspec.structs.replace(key, sha256=digest(secret)), created_at=now, updated_at=now)
        await self.bucket.create(_RECORDS + key.name, _encode(record))
        await self.bucket.put(_DIGESTS + record.key.sha256, key.name.encode())
        return record, secret

    async def update(self, name: str, change: Callable[[ApiKey], ApiKey]) -> StoredKey:
        """Apply `change` to the key's settings, unless another write came between the read and this one
        (then Conflict: the caller reads again)."""
        found = await self.get(name)
        if found is None:
            raise not_found(name)
        record, revision = found
        changed = change(record.key)
        record = msgspec.structs.replace(record, key=changed, updated_at=int(time.time()))
        await self.bucket.update(_RECORDS + name, _encode(record), revision)
        return record

    async def rotate(self, name: str) -> tuple[StoredKey, str]:
        """A new secret for the same key (name, settings, spend, limits' counters): the old one stops working."""
        found = await self.get(name)
        if found is None:
            raise not_found(name)
        old, revision = found
        secret = new_secret()
        now = int(time.time())
        record = msgspec.structs.replace(old, key=msgspec.structs.replace(old.key, sha256=digest(secret)),
                                         updated_at=now, rotated_at=now)
        await self.bucket.update(_RECORDS + name, _encode(record), revision)
        await self.bucket.put(_DIGESTS + record.key.sha256, name.encode())
        await self.bucket.delete(_DIGESTS + old.key.sha256)
        return record, secret

    async def revoke(self, name: str) -> StoredKey:
        found = await self.get(name)
        if found is None:
            raise not_found(name)
        record, _ = found
        await self.bucket.delete(_RECORDS + name)
        await self.bucket.delete(_DIGESTS + record.key.sha256)
        return record

    async def lookup(self, sha256: str) -> ApiKey | None:
        """The key whose secret has this digest, read from the bucket (a key this replica's watch has not
        delivered yet). An index entry left behind by an interrupted rotation finds a record with another
        digest: no key."""
        index = await self.bucket.entry(_DIGESTS + sha256)
        if index is None or not index.value:
            return None
        found = await self.get(index.value.decode())
        return found[0].key if found is not None and found[0].key.sha256 == sha256 else None

    async def follow(self, apply: Callable[[dict[str, ApiKey]], None],
                     changed: Callable[[str, ApiKey | None], None]) -> None:
        """Keep a replica's keys in step with the bucket until cancelled: `apply` gets the whole set once the
        watch has delivered it (again after each new watch), `changed` each change after that. When the
        bucket cannot be reached, the replica keeps the last set it had and tries again every second."""
        while True:
            try:
                await self._watch(apply, changed)
            except GatewayError as exc:
                # Once per outage at warning, then at debug: the retry every second is not news.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "key store unreachable, serving the keys last seen: %s", exc.message)
                self._failing = True
            except (ValueError, msgspec.DecodeError):
                log.exception("key store holds a record this version cannot read; watching again")
            await asyncio.sleep(_RETRY_SECONDS)  # a back-off before watching again, not a synchronisation

    async def _watch(self, apply: Callable[[dict[str, ApiKey]], None],
                     changed: Callable[[str, ApiKey | None], None]) -> None:
        initial: dict[str, ApiKey] | None = {}
        seen = 0  # the latest revision delivered (of any entry: the digests' too)
        async for entry in self.bucket.watch(idle=_IDLE_SECONDS):
            if entry is None:  # caught up, or quiet for a while
                if initial is not None:
                    apply(initial)
                    if self._failing:
                        log.info("key store reachable again: %d key(s)", len(initial))
                        self._failing = False
                    initial = None
                elif await self.bucket.revision() != seen:
                    log.warning("key store changed without the watch seeing it (lost and made again?); reloading")
                    return
                continue
            seen = max(seen, entry.revision)
            if not entry.key.startswith(_RECORDS):
                continue
            name = entry.key.removeprefix(_RECORDS)
            key = None if entry.value is None else _decode(entry.value).key
            if initial is None:
                changed(name, key)
            elif key is not None:
                initial[name] = key
            else:
                initial.pop(name, None)
