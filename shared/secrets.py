"""Secrets that must never leave the gateway: the configured provider credentials (keys, AWS keys,
configured headers, passwords in Redis URLs) and the values of the headers an adapter marks secret on an
upstream call. A misbehaving upstream may echo any of them in an error; `Redactor` replaces every
occurrence in a text before it reaches a client, a log line or a trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlparse

from shared.config import Config

REDACTED = "[redacted]"
# Shorter values would redact ordinary words; a credential is never this short.
_MIN_LENGTH = 6


def configured(config: Config) -> frozenset[str]:
    """Every secret value the configuration holds."""
    values: set[str] = set()
    for provider in config.providers.values():
        values.update(v for v in provider.secrets() if v)
        values.update(provider.headers.values())  # the adapters mark every configured header secret
    for url in (config.cache.redis_url, config.limits.redis_url, config.request_log.database_url,
                *config.nats_url.split(",")):
        if url and (password := urlparse(url.strip()).password):
            values.add(password)
    return frozenset(v for v in values if len(v) >= _MIN_LENGTH)


def header_values(values: Iterable[str]) -> set[str]:
    """Secret header values and, for `Bearer <token>` and the like, the token alone as well."""
    found = set()
    for value in values:
        found.add(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.isalpha():
            found.add(token)
    return found


class Redactor:
    """Replaces every secret it knows in a text; `extra` adds a call's own (its signed headers, say)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= _MIN_LENGTH)
        self._pattern = _pattern(self.secrets)

    def __call__(self, text: str, extra: Iterable[str] = ()) -> str:
        pattern = self._pattern
        if extra and (more := {s for s in extra if len(s) >= _MIN_LENGTH} - self.secrets):
            # An error path only: compiling here costs nothing on the answers that succeed.
            pattern = _pattern(self.secrets | more)
        return text if pattern is None else pattern.sub(REDACTED, text)


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is replaced whole.
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None
