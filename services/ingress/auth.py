"""API keys: who is calling (from `Authorization: Bearer` or `x-api-key`), which models the key may use,
its limits, and its tenant (the cache namespace). Only SHA-256 digests of the keys are configured.

`Keyring.admit` is what every model-serving endpoint calls before its bus hop; with no keys configured
the gateway has no keyring at all and stays open (one `is None` branch per request).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from services.ingress.limits import Limiter, Rule, Snapshot
from shared.config import ApiKey, Config
from shared.errors import AuthenticationFailed, PermissionDenied

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
        window = config.limits.window_seconds
        self._grants = {
            key.sha256: Grant(key, Rule.of(key, window), None if key.models is None else frozenset(key.models))
            for key in config.keys
        }
        self.limiter = limiter

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
    """The gateway's keys and limits; None when no keys are configured (the gateway is open)."""
    if not config.keys:
        return None
    store = None
    if url := config.limits_redis_url:
        from services.ingress.limits_redis import RedisLimits  # redis-py costs ~20 MB: only when used

        store = RedisLimits(url, config.limits.redis_timeout_seconds, config.prefix)
    return Keyring(config, Limiter(config, store))
