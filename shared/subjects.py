"""Every NATS subject, queue group and header name the gateway uses; no subject literal lives elsewhere.

All subjects share one configurable prefix (`llm` by default) so several deployments can share an account.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subjects:
    prefix: str = "llm"

    @property
    def cache_lookup(self) -> str:
        return f"{self.prefix}.cache.lookup"

    @property
    def route(self) -> str:
        return f"{self.prefix}.route"

    @property
    def count_tokens(self) -> str:
        """Count a request's input tokens: the router picks the target as for `route`."""
        return f"{self.prefix}.count_tokens"

    @property
    def cache_fill(self) -> str:
        return f"{self.prefix}.cache.fill"

    @property
    def embed(self) -> str:
        """Embeddings: the router picks the target as for `route` (an `EmbeddingRequest` -> `EmbeddingResult`).
        Any service may ask it (the semantic cache does); with `Llm-Cache-Key` (the key scope of
        `shared/cache/vectors.py`) the router broadcasts each input's vector on `vector_fill`."""
        return f"{self.prefix}.embed"

    @property
    def vector_lookup(self) -> str:
        """The cache tier's stored vectors by key (`VectorLookup` -> `VectorHits`)."""
        return f"{self.prefix}.cache.vectors"

    @property
    def vector_fill(self) -> str:
        """Broadcast (+ queue `cache-l2` for the one L2 write): a `VectorFill` after an embeddings call."""
        return f"{self.prefix}.cache.fill.vectors"

    @property
    def semantic_fill(self) -> str:
        """Broadcast: a `SemanticFill`, the vector of a request whose answer was just stored."""
        return f"{self.prefix}.cache.fill.semantic"

    @property
    def breaker(self) -> str:
        """Broadcast: breaker state changes, so that every router replica acts on them at once."""
        return f"{self.prefix}.router.breaker"

    def admission(self, provider: str) -> str:
        """The JetStream work queue of a provider with a concurrency cap."""
        return f"{self.prefix}.admit.{provider}"

    def admission_stream(self, provider: str) -> str:
        return f"{self.prefix}_admit_{provider}".upper().replace(".", "_").replace("-", "_")

    @property
    def responses_bucket(self) -> str:
        """The key-value bucket of the Responses API's stored responses."""
        return f"{self.prefix}_responses".replace(".", "_").replace("-", "_")

    @property
    def keys_bucket(self) -> str:
        """The key-value bucket of the API keys created through the admin API (watched by every ingress)."""
        return f"{self.prefix}_keys".replace(".", "_").replace("-", "_")

    @property
    def request_log(self) -> str:
        """The request log's JetStream stream: a `RequestRecord` per finished request (ingress -> logger)."""
        return f"{self.prefix}.log.requests"

    @property
    def request_log_stream(self) -> str:
        return f"{self.prefix}_request_log".upper().replace(".", "_").replace("-", "_")

    @property
    def logs_query(self) -> str:
        """Ask the logger for records: `LogQuery` -> `LogPage`."""
        return f"{self.prefix}.logs.query"

    def provider_chat(self, provider: str) -> str:
        return f"{self.prefix}.provider.{provider}.chat"

    def provider_embed(self, provider: str) -> str:
        return f"{self.prefix}.provider.{provider}.embed"

    def provider_count_tokens(self, provider: str) -> str:
        return f"{self.prefix}.provider.{provider}.count_tokens"

    def health(self, kind: str) -> str:
        """Health probe of one service kind: `cache`, `router` or `provider.<name>`."""
        return f"{self.prefix}.health.{kind}"

    @property
    def cancel(self) -> str:
        """Broadcast: the client of the bus id in the header went away; stop its upstream call."""
        return f"{self.prefix}.cancel"


class Queues:
    """Queue groups: one member of each group takes each message."""

    CACHE = "cache"
    CACHE_L2_WRITER = "cache-l2"
    HEALTH = "health"
    LOGGER = "logger"  # also the request log's durable consumer, shared by every logger replica
    ROUTER = "router"

    @staticmethod
    def provider(name: str) -> str:
        return f"provider-{name}"


class Headers:
    """Request-scoped facts carried as NATS headers (each service reads only the ones it needs)."""

    REQUEST_ID = "Llm-Request-Id"  # for logs only: the client's x-request-id or the ingress's own
    # The bus's own id of a request: unguessable, never taken from the client; stream cancels use it.
    BUS_ID = "Llm-Bus-Id"
    TRACEPARENT = "traceparent"
    DEADLINE = "Llm-Deadline"  # absolute, milliseconds since the epoch
    STREAM = "Llm-Stream"  # "1" when the client asked for a stream
    STREAM_TO = "Llm-Stream-To"  # the ingress inbox that receives the chunks
    # A plain request's answer goes straight to this inbox (the ingress's); the reply subject (the router)
    # hears only the outcome: `Delivered`, the answer itself with `Llm-Outcome: result`, or the error (an
    # error never goes to this inbox: the router decides whether to retry, fall back or answer with it).
    ANSWER_TO = "Llm-Answer-To"
    OUTCOME = "Llm-Outcome"  # "result": the router needs the answer too (single-flight followers)
    # With `Llm-Answer-To`: publish the answer here too, first (the cache fill broadcast, with the request's
    # `Llm-Cache-Key` and `Llm-Cache-Ttl`), so that every L1 has it by the time the client could repeat it.
    FILL_TO = "Llm-Fill-To"
    CACHE_KEY = "Llm-Cache-Key"
    CACHE_CONTROL = "Llm-Cache-Control"  # "no-cache", "no-store" or both, comma-separated
    CACHE_TTL = "Llm-Cache-Ttl"  # seconds
    CACHE_TIER = "Llm-Cache"  # on replies: "l1", "l2" or "semantic"
    CACHE_SIMILARITY = "Llm-Cache-Similarity"  # on a semantic hit: the cosine similarity, e.g. "0.9731"
    NAMESPACE = "Llm-Namespace"
    TARGET_MODEL = "Llm-Target-Model"
    # The target's configured USD per 1M tokens, "input,output" (either may be empty): the answer's cost.
    TARGET_PRICES = "Llm-Target-Prices"
    REPLY_TO = "Llm-Reply-To"  # where a request taken from a work queue is answered
    # On a request: "send me a heartbeat every N seconds while you work on this" (see bus.request).
    HEARTBEAT = "Llm-Heartbeat"
    # On a message to a reply subject: a heartbeat (the work goes on), not the reply. Its value is
    # "started" once a stream has sent its first chunk to the client (it must not be retried after that).
    ALIVE = "Llm-Alive"


# Service names as registered with the NATS services framework (`nats micro ls`).
SERVICE_CACHE = "llm-edge-cache"
SERVICE_ROUTER = "llm-edge-router"
SERVICE_LOGGER = "llm-edge-logger"


def provider_service_name(provider: str) -> str:
    return f"llm-edge-provider-{provider}"
