"""API keys: who is calling (from `Authorization: Bearer` or `x-api-key`), which models the key may use,
its limits, and its tenant (the cache namespace). Only SHA-256 digests of the keys are known.

The keys are those of the configuration (read-only) and, with the admin API on, those of the key store
(keystore.py), which the ring follows live. `Keyring.admit` is what every model-serving endpoint calls
before its bus hop; with no keys configured and no admin key the gateway has no keyring at all and stays
open (one `is None` branch per request).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.ingress.limits import Limiter, Rule, Snapshot
from shared.config import ApiKey, Config
from shared.errors import AuthenticationFailed, GatewayError, PermissionDenied

if TYPE_CHECKING:
    from services.ingress.keystore import KeyStore

log = logging.getLogger("llm_edge.ingress.keys")

_MISSING = (
    "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY) or in an x-api-key header."
)
_INCORRECT = "Incorrect API key provided."


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Grant:
    """An authenticated key: its configuration and its limits."""

    key: ApiKey
    rule: Rule
    models: frozenset[str] | None

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def namespace(self) -> str:
        return self.key.namespace


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent: OpenAI's SDKs use `Authorization: Bearer`, Anthropic's `x-api-key`."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class Keyring:
    def __init__(self, config: Config, limiter: Limiter) -> None:
        self.window = config.limits.window_seconds
        self.configured = {key.name: key for key in config.keys}  # read-only: the admin API cannot change them
        self._config = {key.sha256: self.grant(key) for key in config.keys}
        self._stored: dict[str, Grant] = {}  # the key store's, by name
        self._grants = dict(self._config)  # every key by digest: replaced whole on a change, never mutated
        self.limiter = limiter
        self.store: KeyStore | None = None  # set once the bus is connected, when the admin API is on

    def grant(self, key: ApiKey) -> Grant:
        return Grant(key, Rule.of(key, self.window), None if key.models is None else frozenset(key.models))

    def apply(self, keys: dict[str, ApiKey]) -> None:
        """The key store's whole set (a watch's initial values): replaces every stored key known so far."""
        self._stored = {name: self.grant(key) for name, key in keys.items() if self._storable(name)}
        self._rebuild()

    def changed(self, name: str, key: ApiKey | None) -> None:
        """One stored key created, changed, rotated (None: revoked)."""
        if key is None:
            self._stored.pop(name, None)
        elif self._storable(name):
            self._stored[name] = self.grant(key)
        self._rebuild()

    def _storable(self, name: str) -> bool:
        if name in self.configured:  # the admin API refuses such names; a file changed since may not
            log.warning("key store entry '%s' ignored: the configuration has a key of that name", name)
            return False
        return True

    def _rebuild(self) -> None:
        grants = {grant.key.sha256: grant for grant in self._stored.values()}
        grants.update(self._config)
        self._grants = grants

    def names(self) -> list[str]:
        return sorted(grant.name for grant in self._grants.values())

    def authenticate(self, headers: Mapping[str, str]) -> Grant:
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(_MISSING)
        presented = digest(key)
        grant = self._grants.get(presented)
        # The dictionary finds the candidate by the digest of what was presented (timing there tells
        # nothing about a key: SHA-256 cannot be walked backwards); the final check is constant-time.
        if grant is None or not hmac.compare_digest(grant.key.sha256, presented):
            raise AuthenticationFailed(_INCORRECT)
        return grant

    async def find(self, headers: Mapping[str, str]) -> Grant:
        """`authenticate`, and for a key this replica has not heard of, the key store: a key created a moment
        ago on another replica works here at once, before the watch delivers it."""
        try:
            return self.authenticate(headers)
        except AuthenticationFailed:
            key = presented_key(headers)
            if self.store is None or key is None:
                raise
            try:
                found = await self.store.lookup(digest(key))
            except GatewayError as exc:  # the store is away: what this replica knows is all there is
                log.warning("key store lookup failed: %s", exc.message)
                found = None
            if found is None or found.name in self.configured:
                raise
            return self.grant(found)

    def authorize(self, grant: Grant, model: str) -> None:
        if grant.models is not None and model not in grant.models:
            raise PermissionDenied(
                f"The key '{grant.name}' is not allowed to use the model `{model}`.", param="model"
            )

    def visible(self, grant: Grant, models: list[str]) -> list[str]:
        return models if grant.models is None else [m for m in models if m in grant.models]

    async def admit(self, grant: Grant, model: str) -> Snapshot | None:
        """Check the model, then count the request against the key's limits (raises limits.Refused)."""
        self.authorize(grant, model)
        if not grant.rule.limited:
            return None
        return await self.limiter.admit(grant.rule)


def keyring(config: Config) -> Keyring | None:
    """The gateway's keys and limits; None when no keys are configured and no admin key either (the gateway
    is open). With an admin key, keys are required even before the first one is created."""
    if not config.keys and config.admin.key_sha256 is None:
        return None
    store = None
    if url := config.limits_redis_url:
        from services.ingress.limits_redis import RedisLimits  # redis-py costs ~20 MB: only when used

        store = RedisLimits(url, config.limits.redis_timeout_seconds, config.prefix)
    return Keyring(config, Limiter(config, store))
