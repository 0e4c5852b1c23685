"""Typed configuration: one YAML or TOML file decoded into msgspec structs, then environment overrides.

Read once at start and passed down. A bad value fails fast with the field's path in the message.
With no file and no provider keys, the gateway starts with the mock provider so the first run works.
Each provider entry is decoded into its adapter's own settings struct (a `ProviderSettings` subclass
tagged with the adapter's name); the CLI hands the adapters' settings to `load`, so this module imports
no service.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
from msgspec import Meta, Struct


class ConfigError(Exception):
    """The configuration cannot be used; the message names the bad field."""


class ProviderSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="adapter"):
    """What every provider entry has. Each adapter extends it with its own fields, tagged with its name: an
    entry's `adapter` (defaulting to the entry's own name, so several entries can use one adapter, two
    OpenAI-compatible servers say) picks the struct, and a field of another adapter's is an error."""

    api_key: str | None = None
    base_url: str | None = None
    # Three waits, none of them a budget for the whole call (the request's deadline is the only total, so
    # a healthy stream runs as long as the client allows): the TCP/TLS connect; the wait for the answer to
    # begin (the response head, then a stream's first chunk; a whole non-streamed answer is generated in
    # this wait); and the silence allowed between two chunks of a body once it flows.
    connect_timeout_seconds: float = 10.0
    timeout_seconds: float = 600.0  # to the first byte
    idle_timeout_seconds: float = 60.0
    max_connections: int = 256
    max_concurrency: int = 1024  # requests one worker process handles at once
    # Calls in flight to this provider across all its worker replicas. When set, requests wait in a
    # JetStream work queue (up to their deadline) instead of failing with 429.
    max_in_flight: int | None = None
    headers: dict[str, str] = {}

    # The variable holding the adapter's API key: set, it fills `api_key` of the entry named like the
    # adapter, and adds that entry when the file has none.
    key_env: ClassVar[str | None] = None
    # Variables (the ones the vendor's own SDK reads) filling fields that the entry named like the adapter
    # leaves out: variable -> field; the first one set wins.
    env: ClassVar[Mapping[str, str]] = {}
    # Public model names the provider answers under its own name, listed without a configured route.
    public_models: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def tag(cls) -> str:
        """The adapter these settings are for."""
        return str(cls.__struct_config__.tag)

    @property
    def adapter(self) -> str:
        return self.tag()

    def problem(self) -> str | None:
        """Why these settings cannot work (checked once, at load) as "field: reason", or None."""
        return None

    def secrets(self) -> tuple[str | None, ...]:
        """The credential values this entry holds (never logged, scrubbed from what leaves the gateway)."""
        return (self.api_key,)

    def native_responses(self) -> bool:
        """Whether Responses API clients are served by this provider's own `/responses` (keeping reasoning
        items and built-in tools) rather than translated to its chat API."""
        return False


# Adapter name -> its settings struct: what `load` needs to know about the adapters.
Adapters = Mapping[str, type[ProviderSettings]]


class Target(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    provider: str
    model: str
    weight: float = 1.0
    # USD per 1M tokens; when unset, the shipped pricing table's price for `model`.
    input_price: float | None = None
    output_price: float | None = None
    # Tokens; a context-window error moves on to a target with a larger window.
    context_window: int | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


Strategy = Literal["fallback", "weighted", "least_latency", "lowest_cost", "hybrid"]
# What the ingress does with personal data and secrets in a request (services/ingress/pii.py): nothing, replace
# them with placeholders, refuse the request, or replace them and put them back into the answer.
PiiMode = Literal["off", "redact", "block", "redact_restore"]
PiiKind = Literal["email", "phone", "card", "iban", "ssn", "ip", "secret"]


class SemanticCache(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model's opt-in semantic cache (see shared/cache/semantic.py): a chat request that misses the exact
    cache is embedded with `embedding_model`, and an earlier answer whose request was at least `threshold`
    cosine-similar (and alike in everything else) is returned."""

    embedding_model: str
    threshold: float = 0.95
    scope: Literal["last_user", "conversation"] = "last_user"  # the text embedded
    # Tools whose results depend on the moment (a clock, a price, the weather): a request declaring one
    # never gets a semantic hit. A conversation holding tool calls or results never does either.
    volatile_tools: list[str] = []
    timeout_seconds: float = 0.5  # the wait for the embedding; past it the lookup is a miss
    # Ask the embedding model for shorter vectors (OpenAI's text-embedding-3 and others take `dimensions`):
    # a lookup reads every vector of its partition, so its cost and the index's memory grow with this.
    dimensions: int | None = None


class ModelRoute(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    targets: list[Target]
    strategy: Strategy = "fallback"
    pii: PiiMode | None = None  # for requests to this model; None: `pii.mode`
    semantic_cache: SemanticCache | None = None


class PiiConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PII detection before a request leaves for a provider. A key's or a model's own `pii` replaces `mode`;
    where both are set, the stricter applies (off < redact_restore < redact < block)."""

    mode: PiiMode = "off"
    kinds: list[PiiKind] = msgspec.field(default_factory=lambda: list(get_args(PiiKind)))
    phone_region: str = "US"  # how a phone number written without its +country code is read


class RetryConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    attempts: int = 2  # per target, the first call included
    backoff_base_seconds: float = 0.25
    backoff_max_seconds: float = 8.0
    # A Retry-After longer than this moves on to the next target instead of waiting.
    max_retry_after_seconds: float = 30.0


class BreakerConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    consecutive_failures: int = 5
    error_rate: float = 0.5  # opens when this share of calls in the window failed...
    window_seconds: float = 30.0
    min_calls: int = 20  # ...and the window holds at least this many calls
    cooldown_seconds: float = 15.0
    # When every target of a model is open, one call at a time still probes (no cooldown wait); a new probe
    # once the last has been out this long (docs/ROUTING.md, "Circuit breakers").
    probe_interval_seconds: Annotated[float, Meta(gt=0)] = 1.0


class RouterConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    # Weight of latency against price in the hybrid score (0: price only, 1: latency only).
    hybrid_latency_weight: float = 0.5


class IngressConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 20 * 1024 * 1024
    request_timeout_seconds: float = 600.0
    # A stream that sends nothing for this long ends with an error event.
    stream_idle_timeout_seconds: float = 120.0
    # Slow or oversized clients (services/ingress/guard.py): the request head must arrive within this of
    # its first byte (408), the body may not pause longer than this between two reads, the head may not
    # be larger than this (431); an idle keep-alive connection closes after keep_alive_seconds.
    client_header_timeout_seconds: float = 10.0
    client_body_timeout_seconds: float = 15.0
    max_header_bytes: int = 64 * 1024
    keep_alive_seconds: int = 5


class CacheConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    ttl_seconds: float = 3600.0
    # Each ingress keeps an L1 of its own, filled by the same broadcast as the cache service's: a hit
    # there crosses no bus at all, and without L2 a miss goes straight to the router (two crossings
    # fewer). With L2 (redis_url) a local miss still asks the cache service, which reads Redis.
    ingress_l1: bool = True
    l1_max_bytes: int = 64 * 1024 * 1024
    l1_max_entries: int = 100_000
    redis_url: str | None = None
    # ENABLE_L2_CACHE=false turns L2 off while redis_url stays set (the rate limits may still use it).
    l2_enabled: bool = True
    redis_timeout_seconds: float = 0.25
    # The ingress stops waiting for the cache tier after this and asks the router (the cache is optional).
    lookup_timeout_seconds: float = 1.0
    # Requests kept in each cache replica's semantic index (all models, all tenants), least recently used
    # first out, and the bytes of their vectors (4 per dimension: 6 KB for 1536); an entry also leaves with
    # its answer's TTL.
    semantic_max_entries: int = 100_000
    semantic_max_bytes: int = 256 * 1024 * 1024


class ResponsesConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Responses API's stored responses (`store: true`, `previous_response_id`): a JetStream key-value
    bucket every ingress replica shares."""

    retention_seconds: float = 30 * 24 * 3600.0  # a stored response expires this long after it was written
    storage: Literal["file", "memory"] = "file"


class RequestLogConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The request log (off unless enabled): the ingress publishes a record per request to a JetStream
    stream; the logger service (`llm-edge logger`) writes them to SQLite or PostgreSQL. See
    services/ingress/request_log.py and services/logger/."""

    enabled: bool = False
    # Also keep the request and response bodies (configured secrets redacted), each cut at max_body_bytes.
    bodies: bool = False
    # Run the PII detector over kept bodies even where no PII mode applies (where one does, they are always).
    redact_pii: bool = False
    max_body_bytes: int = 64 * 1024
    # The stream holds what the logger has not written yet (and, up to these limits, what it has).
    stream_max_age_seconds: float = 7 * 24 * 3600.0
    stream_max_bytes: int = 1024 * 1024 * 1024
    storage: Literal["file", "memory"] = "file"
    # Records an ingress holds while the bus cannot take them; beyond this the newest are dropped (counted).
    queue_size: int = 10_000
    # postgresql://user:password@host/db; unset: SQLite at sqlite_path.
    database_url: str | None = None
    sqlite_path: str = "llm-edge-requests.db"
    retention_days: float = 30.0  # rows older than this are deleted (hourly); 0 keeps them forever
    # Stream messages written per transaction; each holds the records one ingress had queued (up to 256 KB).
    batch_size: int = 50


class ApiKey(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One caller's key: only its SHA-256 digest is configured (`llm-edge hash-key` prints it)."""

    name: str  # what metrics, logs and traces call the key; never the key itself
    sha256: str  # hex digest of the key
    models: list[str] | None = None  # public model names it may use; None: every model
    rpm: int | None = None  # requests per window (a minute unless limits.window_seconds says otherwise)
    tpm: int | None = None  # tokens (prompt + completion) per window
    budget_usd: float | None = None  # spend per limits.budget_period
    tenant: str | None = None  # cache namespace; keys of one tenant share cached answers
    pii: PiiMode | None = None  # for this key's requests; None: `pii.mode` (see PiiConfig)

    @property
    def namespace(self) -> str:
        return self.tenant or self.name


class AdminConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The admin API (`/admin/...`: keys at run time, spend): off (404) unless an admin key is configured."""

    key_sha256: str | None = None  # hex digest of the admin key (`llm-edge hash-key`); LLM_EDGE_ADMIN_KEY_SHA256


class SpendConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Spend and usage per key, tenant and model, in Redis (limits.redis_url or cache.redis_url) bucketed by
    hour and by day (UTC); without Redis, in each ingress process's memory."""

    # Hour buckets are kept this long; before it, a queried range must start and end on whole days.
    hourly_retention_days: int = 62


class LimitsConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Where the counters live, shared by every ingress replica; defaults to cache.redis_url. Without
    # Redis (or while it is unreachable) each ingress process enforces the limits on its own.
    redis_url: str | None = None
    redis_timeout_seconds: float = 0.1
    window_seconds: float = 60.0  # the "minute" of rpm and tpm
    budget_period: Literal["month", "total"] = "month"  # month: calendar month, UTC


class Config(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    prefix: str = "llm"
    # One URL, or several separated by commas (the nodes of a cluster, tried in the order given for the first
    # connect; the server then tells the client of every node).
    nats_url: str = "nats://127.0.0.1:4222"
    # Replicas of the JetStream streams we create (the admission work queues): 1 on one server; 3 in a
    # cluster, so a queue survives the loss of a node (at most 5, and never more than the cluster has).
    jetstream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    log_level: str = "INFO"
    # Where a non-ingress service exposes /metrics (the ingress serves it on its HTTP port).
    metrics_port: int | None = None
    # OTLP/HTTP collector base URL; tracing is off when unset.
    otel_endpoint: str | None = None
    # ENABLE_TRACING: false turns tracing off even with an endpoint; true turns it on, towards the OTLP
    # default (http://localhost:4318) when no endpoint is set. Unset: on exactly when an endpoint is.
    tracing_enabled: bool | None = None
    # ENABLE_METRICS=false: no /metrics on any process (the probes stay).
    metrics_enabled: bool = True
    ingress: IngressConfig = IngressConfig()
    cache: CacheConfig = CacheConfig()
    responses: ResponsesConfig = ResponsesConfig()
    request_log: RequestLogConfig = RequestLogConfig()
    router: RouterConfig = RouterConfig()
    providers: dict[str, ProviderSettings] = {}
    models: list[ModelRoute] = []
    # API keys; none configured: the gateway is open and every caller shares the "default" namespace.
    keys: list[ApiKey] = []
    limits: LimitsConfig = LimitsConfig()
    admin: AdminConfig = AdminConfig()
    spend: SpendConfig = SpendConfig()
    pii: PiiConfig = PiiConfig()

    @property
    def tracing_endpoint(self) -> str | None:
        """Where spans go, or None when tracing is off."""
        if self.tracing_enabled is False:
            return None
        if self.tracing_enabled and self.otel_endpoint is None:
            return "http://localhost:4318"  # the OTLP/HTTP default
        return self.otel_endpoint

    @property
    def limits_redis_url(self) -> str | None:
        return self.limits.redis_url or self.cache.redis_url

    def provider(self, name: str) -> ProviderSettings:
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigError(f"providers.{name}: no such provider is configured") from None


def _flag(value: str) -> bool:
    """A boolean environment variable: true/false, 1/0, yes/no, on/off (any case)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


def _replicas(value: str) -> int:
    """JETSTREAM_REPLICAS: what JetStream allows, 1 to 5."""
    count = int(value)
    if not 1 <= count <= 5:
        raise ValueError(value)
    return count


# Environment variable -> (section, field). Keys for providers are handled apart (they add a provider).
_ENV_FIELDS: dict[str, tuple[str | None, str, Callable[[str], object]]] = {
    "HOST": ("ingress", "host", str),
    "PORT": ("ingress", "port", int),
    "NATS_URL": (None, "nats_url", str),
    "JETSTREAM_REPLICAS": (None, "jetstream_replicas", _replicas),
    "REDIS_URL": ("cache", "redis_url", str),
    "LOG_LEVEL": (None, "log_level", str),
    "LLM_EDGE_PREFIX": (None, "prefix", str),
    "METRICS_PORT": (None, "metrics_port", int),
    "OTEL_EXPORTER_OTLP_ENDPOINT": (None, "otel_endpoint", str),
    "LIMITS_REDIS_URL": ("limits", "redis_url", str),
    "LLM_EDGE_ADMIN_KEY_SHA256": ("admin", "key_sha256", str),
    "ENABLE_L2_CACHE": ("cache", "l2_enabled", _flag),
    "ENABLE_TRACING": (None, "tracing_enabled", _flag),
    "ENABLE_METRICS": (None, "metrics_enabled", _flag),
    "ENABLE_REQUEST_LOG": ("request_log", "enabled", _flag),
    "REQUEST_LOG_BODIES": ("request_log", "bodies", _flag),
    "REQUEST_LOG_REDACT_PII": ("request_log", "redact_pii", _flag),
    "REQUEST_LOG_DATABASE_URL": ("request_log", "database_url", str),
}
# The key list as JSON (the `keys` section's shape), e.g. from a Kubernetes Secret; replaces the file's.
_KEYS_ENV = "LLM_EDGE_KEYS"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

def _read(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    try:
        if path.suffix in (".yaml", ".yml"):
            data = msgspec.yaml.decode(raw)
        elif path.suffix == ".toml":
            data = msgspec.toml.decode(raw)
        else:
            raise ConfigError(f"{path}: configuration must be a .yaml, .yml or .toml file")
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    for var, (section, field, kind) in _ENV_FIELDS.items():
        if var not in env or env[var] == "":
            continue
        try:
            value = kind(env[var])
        except ValueError:
            expected = ("true or false" if kind is _flag else "an integer from 1 to 5" if kind is _replicas
                        else getattr(kind, "__name__", "a value"))
            raise ConfigError(f"{var}={env[var]!r}: expected {expected}") from None
        if section is None:
            config = msgspec.structs.replace(config, **{field: value})
        else:
            sub = msgspec.structs.replace(getattr(config, section), **{field: value})
            config = msgspec.structs.replace(config, **{section: sub})
    if keys := env.get(_KEYS_ENV):
        try:
            config = msgspec.structs.replace(config, keys=msgspec.json.decode(keys, type=list[ApiKey]))
        except msgspec.DecodeError as exc:  # ValidationError included; the message names the field
            raise ConfigError(f"{_KEYS_ENV}: {exc}") from None
    return config


def _provider_entries(raw: object, env: Mapping[str, str], adapters: Adapters) -> dict[str, dict[str, Any]]:
    """The file's provider entries (as plain data), with what each adapter reads from the environment."""
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError("providers: expected a mapping of provider name -> settings")
    entries: dict[str, dict[str, Any]] = {str(name): dict(entry) for name, entry in raw.items()}
    for name, settings in adapters.items():
        if settings.key_env and (key := env.get(settings.key_env)):
            entries.setdefault(name, {}).setdefault("api_key", key)
        own = entries.get(name)
        if own is None or own.get("adapter", name) != name:
            continue  # the variables speak for the adapter's own entry only
        for var, field in settings.env.items():
            if (value := env.get(var)) and own.get(field) is None:
                own[field] = value
    if not entries:
        entries["mock"] = {}
    return entries


def _provider(name: str, entry: dict[str, Any], adapters: Adapters) -> ProviderSettings:
    adapter = entry.get("adapter", name)
    settings = adapters.get(adapter) if isinstance(adapter, str) else None
    if settings is None:
        known = ", ".join(sorted(adapters))
        raise ConfigError(f"providers.{name}.adapter: unknown adapter {adapter!r} (known: {known})")
    try:
        provider = msgspec.convert(entry, settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"providers.{name} (adapter {adapter}): {exc}") from None
    if problem := provider.problem():
        raise ConfigError(f"providers.{name}.{problem}")
    return provider


def build(data: Mapping[str, Any], adapters: Adapters, env: Mapping[str, str] | None = None) -> Config:
    """The configuration from plain data (a decoded file), the environment applied, checked."""
    fields = dict(data)
    raw_providers = fields.pop("providers", None) or {}
    try:
        config = msgspec.convert(fields, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
    env = env or {}
    config = _apply_env(config, env)
    entries = _provider_entries(raw_providers, env, adapters)
    providers = {name: _provider(name, entry, adapters) for name, entry in entries.items()}
    return _validate(msgspec.structs.replace(config, providers=providers))


def _validate(config: Config) -> Config:
    for i, route in enumerate(config.models):
        if not route.targets:
            raise ConfigError(f"models[{i}].targets: a model needs at least one target")
        for j, target in enumerate(route.targets):
            if target.provider not in config.providers:
                raise ConfigError(
                    f"models[{i}].targets[{j}].provider: {target.provider!r} is not in providers"
                )
        if route.semantic_cache is not None and (problem := _semantic_problem(route.semantic_cache)):
            raise ConfigError(f"models[{i}].semantic_cache.{problem}")
    _validate_keys(config)
    _validate_pii(config)
    _validate_request_log(config.request_log)
    return config


def _validate_pii(config: Config) -> None:
    # The shape only: whether phonenumbers knows the region is checked by the ingress (services/ingress/pii.py),
    # which imports it; every other process would pay its ~0.2 s import for nothing.
    if not re.fullmatch(r"[A-Z]{2}|001", config.pii.phone_region):
        raise ConfigError(f"pii.phone_region: {config.pii.phone_region!r} is not a region code (e.g. US, GB, DE)")
    if not config.pii.kinds:
        raise ConfigError("pii.kinds: an empty list detects nothing; set pii.mode: off instead")


def _semantic_problem(semantic: SemanticCache) -> str | None:
    if not semantic.embedding_model:
        return "embedding_model: must name an embedding model"
    if not 0 < semantic.threshold <= 1:
        return "threshold: a cosine similarity above 0 and at most 1"
    if not semantic.timeout_seconds > 0:
        return "timeout_seconds: must be positive"
    if semantic.dimensions is not None and semantic.dimensions < 1:
        return "dimensions: must be at least 1 (leave it out for the model's own)"
    return None


def _validate_request_log(settings: RequestLogConfig) -> None:
    url = settings.database_url
    if url is not None and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError("request_log.database_url: expected postgresql://user:password@host/db or sqlite:///path")
    for field in ("batch_size", "queue_size", "max_body_bytes"):
        if getattr(settings, field) < 1:
            raise ConfigError(f"request_log.{field}: must be at least 1")
    if settings.retention_days < 0:
        raise ConfigError("request_log.retention_days: must not be negative (0 keeps rows forever)")


def _validate_keys(config: Config) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for i, key in enumerate(config.keys):
        where = f"keys[{i}]"
        if not key.name:
            raise ConfigError(f"{where}.name: a key needs a name")
        if key.name in names:
            raise ConfigError(f"{where}.name: {key.name!r} is used by another key")
        if not _DIGEST.match(key.sha256):
            raise ConfigError(
                f"{where}.sha256: expected 64 lowercase hex digits (`llm-edge hash-key` prints them)"
            )
        if key.sha256 in digests:
            raise ConfigError(f"{where}.sha256: the same digest is configured for another key")
        for field in ("rpm", "tpm"):
            value = getattr(key, field)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{field}: must be at least 1 (leave it out for no limit)")
        if key.budget_usd is not None and key.budget_usd < 0:
            raise ConfigError(f"{where}.budget_usd: must not be negative")
        if key.tenant is not None and not key.tenant:
            raise ConfigError(f"{where}.tenant: must not be empty (leave it out to use the key's name)")
        if key.models is not None and not key.models:
            raise ConfigError(
                f"{where}.models: an empty list allows nothing; leave it out to allow every model"
            )
        names.add(key.name)
        digests.add(key.sha256)
    _validate_admin(config, digests)
    if config.limits.window_seconds <= 0:
        raise ConfigError("limits.window_seconds: must be positive")
    if config.limits.redis_timeout_seconds <= 0:
        raise ConfigError("limits.redis_timeout_seconds: must be positive")


def _validate_admin(config: Config, digests: set[str]) -> None:
    admin = config.admin.key_sha256
    if admin is not None and not _DIGEST.match(admin):
        raise ConfigError("admin.key_sha256: expected 64 lowercase hex digits (`llm-edge hash-key` prints them)")
    if admin is not None and admin in digests:
        raise ConfigError("admin.key_sha256: the admin key must not also be a caller's key")
    if config.spend.hourly_retention_days < 1:
        raise ConfigError("spend.hourly_retention_days: must be at least 1")


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, *, adapters: Adapters
) -> Config:
    """Read the file named by `path` or `LLM_EDGE_CONFIG` (if any), then apply the environment. `adapters`
    (the CLI passes every adapter's) decides which settings each provider entry may have."""
    env = os.environ if env is None else env
    path = path or env.get("LLM_EDGE_CONFIG") or None
    if path is None:
        return build({}, adapters, env)
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: configuration file not found")
    try:
        return build(_read(file), adapters, env)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def encode(config: Config) -> bytes:
    """The resolved configuration as JSON, to hand to child processes unchanged."""
    return msgspec.json.encode(config)


def decode(data: bytes, adapters: Adapters) -> Config:
    return build(msgspec.json.decode(data), adapters)
