"""`Call`: the typed context of one HTTP request at the ingress, from its arrival to its last byte. What the
endpoints learn (request id, caller, model, cache tier, provider) is written here and read by the log line,
the metrics and the trace span at the end, instead of an untyped `request.state` bag.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.types import Scope

if TYPE_CHECKING:
    from services.ingress.auth import Grant
    from services.ingress.gateway import Gateway
    from shared.messages import Usage

# The ASGI scope key the call lives under (set by `edge.Edge` for every HTTP request).
SCOPE_KEY = "llm_edge.call"


class Call:
    """One HTTP request's context. Created by the edge before any routing; an endpoint reaches it with
    `Call.of(request)`."""

    __slots__ = ("cache", "cost_usd", "error", "gateway", "grant", "key", "limit_headers", "model", "operation",
                 "provider", "provider_seconds", "rid", "started", "status", "tenant", "usage")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.started = time.perf_counter()
        self.rid: str | None = None  # the request id, once the request is accepted
        self.grant: Grant | None = None  # the caller, when the gateway has keys
        self.key: str | None = None  # the caller key's configured name (never the key)
        self.model = "unresolved"
        self.operation = "chat"  # the GenAI operation the trace names: "chat" or "embeddings"
        self.cache = "none"  # "none" (not looked up), "miss", "hit-l1", "hit-l2"
        self.provider: str | None = None
        self.provider_seconds: float | None = None  # the upstream's share of a complete answer
        self.limit_headers: dict[str, str] | None = None  # the key's rate-limit state, for the response
        self.status = 0  # the response's status, once it has started
        # For the request log: the caller's tenant, the answer's usage and cost, the error's code.
        self.tenant: str | None = None
        self.usage: Usage | None = None
        self.cost_usd = 0.0
        self.error: str | None = None

    @staticmethod
    def of(connection: HTTPConnection | Scope) -> Call:
        scope = connection.scope if isinstance(connection, HTTPConnection) else connection
        call: Call = scope[SCOPE_KEY]
        return call
