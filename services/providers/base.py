"""What a provider adapter is: pure functions between the unified types and one provider's wire format.

An `HttpAdapter` says where to call (URL, headers) and how to translate (request body, response body,
error body). The worker loop in `worker.py` does the HTTP, deadlines and cancellation for all of them.
A `LocalAdapter` answers in-process (the mock provider) and is otherwise served the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import msgspec

from shared.config import ProviderSettings
from shared.errors import (
    BodyTooLarge,
    ContextWindowExceeded,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    Unavailable,
)
from shared.messages import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    TokenCount,
    ToolCallDelta,
    Usage,
)
from shared.secrets import header_values


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One upstream HTTP request, fully built; the worker sends it as is."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    # Names of headers whose values are secrets (never logged, redacted from errors).
    secret_headers: frozenset[str] = field(default_factory=frozenset)

    def secret_values(self) -> set[str]:
        """The values of the secret headers (and the token of `Bearer <token>`), to redact from errors."""
        names = {name.lower() for name in self.secret_headers}
        return header_values(value for name, value in self.headers.items() if name.lower() in names)


# The settings struct an adapter reads (its own, a `ProviderSettings` subclass).
S_contra = TypeVar("S_contra", bound=ProviderSettings, contravariant=True)


class HttpAdapter(Protocol[S_contra]):
    name: str
    default_base_url: str

    @property
    def settings(self) -> type[ProviderSettings]:
        """What a provider entry using this adapter holds."""
        ...

    def build_request(self, request: ChatRequest, model: str, config: S_contra) -> HttpCall:
        """The upstream call for `request`, addressed to the provider's `model`."""
        ...

    def parse_response(self, body: bytes, *, provider: str, model: str) -> ChatResult:
        """A 2xx body turned into the unified result; raises ProviderError if it is malformed."""
        ...

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], *, provider: str
    ) -> GatewayError:
        """A non-2xx answer turned into our error, with the provider's own message when it has one."""
        ...

    def build_stream_request(self, request: ChatRequest, model: str, config: S_contra) -> HttpCall:
        """The upstream call asking for a stream (OpenAI: with usage in the last chunk)."""
        ...

    def stream_parser(self, *, provider: str, model: str) -> StreamParser:
        ...

    def stream_decoder(self) -> StreamDecoder:
        """The framing of this provider's stream body: SSE for most, AWS event stream for Bedrock."""
        ...


@runtime_checkable
class CountingAdapter(Protocol[S_contra]):
    """An adapter whose provider counts tokens itself (Anthropic's `count_tokens`); the worker estimates
    with a tokenizer for the others."""

    def build_count_request(self, request: ChatRequest, model: str, config: S_contra) -> HttpCall: ...

    def parse_count(self, body: bytes, *, provider: str, model: str) -> TokenCount: ...


class Authorizer(Protocol):
    """Credentials a cloud hands out at run time (AWS's credential chain, an Entra ID or a Google token),
    refreshed before they expire: they sign or authorize each built call just before it is sent. One per
    worker, made by the adapter; a refresh never blocks the event loop."""

    async def authorize(self, call: HttpCall) -> HttpCall: ...

    async def close(self) -> None: ...


@runtime_checkable
class AuthorizingAdapter(Protocol[S_contra]):
    """An adapter whose calls may need run-time credentials (`authorizer` returns None when the settings
    hold a static key, which `build_request` already put in the call)."""

    def authorizer(self, config: S_contra, *, provider: str) -> Authorizer | None: ...


@runtime_checkable
class EmbeddingAdapter(Protocol[S_contra]):
    """An HTTP adapter whose provider makes embeddings. The worker (`embedding.py`) splits a request into
    batches of at most `embed_batch_limit` inputs, calls each, and joins the vectors back in input order;
    errors go through the adapter's `parse_error`."""

    def embed_batch_limit(self, model: str) -> int:
        """The most inputs one upstream call takes for `model` (Titan: 1, Cohere: 96, OpenAI: 2048)."""
        ...

    def build_embed_request(self, request: EmbeddingRequest, model: str, config: S_contra) -> HttpCall:
        """The upstream call for all of `request.input` (never more than the batch limit)."""
        ...

    def parse_embed_response(self, body: bytes, headers: Mapping[str, str], *, provider: str, model: str,
                             inputs: int) -> EmbeddingResult:
        """A 2xx answer as `inputs` float32 vectors in input order; raises ProviderError when malformed."""
        ...


@runtime_checkable
class LocalEmbedder(Protocol[S_contra]):
    """A local adapter that makes embeddings in-process (the mock)."""

    async def embed(self, request: EmbeddingRequest, model: str, config: S_contra) -> EmbeddingResult: ...


@runtime_checkable
class LocalAdapter(Protocol[S_contra]):
    name: str

    @property
    def settings(self) -> type[ProviderSettings]: ...

    async def complete(self, request: ChatRequest, model: str, config: S_contra) -> ChatResult: ...

    def stream(
        self, request: ChatRequest, model: str, config: S_contra
    ) -> AsyncIterator[Delta | StreamSummary]:
        """Deltas, then one StreamSummary last."""
        ...


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` (seconds form) or OpenAI's `retry-after-ms`; None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    if (seconds := lowered.get("retry-after")) is not None:
        try:
            return max(0.0, float(seconds))
        except ValueError:
            return None  # an HTTP-date; rare from LLM providers, not worth a parser here
    return None


def error_for_status(
    status: int, message: str, *, provider: str, headers: Mapping[str, str], code: str | None = None
) -> GatewayError:
    """The one table from an upstream HTTP status to our error (retryable or not).

    A provider's 401/403 means *our* credential for it is bad, not the caller's: the caller sees a 502
    so it does not think its own key was refused, and the router can still fall back to another target.
    """
    where = f"provider:{provider}"
    text = f"{provider}: {message}"
    if status in (400, 422):
        return InvalidRequest(text, code=code, where=where)
    if status in (401, 403):
        return ProviderError(text, code="provider_auth_failed", where=where, retryable=False)
    if status == 404:
        return NotFound(text, code=code or "model_not_found", where=where)
    if status == 408:
        return DeadlineExceeded(text, code="provider_timeout", where=where)
    if status == 413:
        return BodyTooLarge(text, where=where)
    if status == 429:
        return RateLimited(
            text, code=code or "rate_limit_exceeded", where=where, retry_after=retry_after_seconds(headers)
        )
    if status in (503, 529):
        return Unavailable(
            text, code="provider_overloaded", where=where, retry_after=retry_after_seconds(headers)
        )
    if status >= 500:
        return ProviderError(text, code="provider_error", where=where, retryable=True)
    return ProviderError(text, code=f"provider_status_{status}", where=where, retryable=False)


def context_window_exceeded(message: str, *, provider: str) -> ContextWindowExceeded:
    """The provider said the prompt does not fit its model's context window (each adapter knows how its
    provider words it); the router may fall back to a target with a larger window."""
    return ContextWindowExceeded(f"{provider}: {message}", param="messages", where=f"provider:{provider}")


def mentions(message: str, phrases: tuple[str, ...]) -> bool:
    """Whether `message` contains one of `phrases` (lower case), ignoring case. For providers that say
    what an error is only in its message, such as a context-window overflow inside a generic 400."""
    lowered = message.lower()
    return any(phrase in lowered for phrase in phrases)


def merge_headers(defaults: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """`defaults` overridden by `extra`, header names compared case-insensitively."""
    overridden = {k.lower() for k in extra}
    merged = {k: v for k, v in defaults.items() if k.lower() not in overridden}
    merged.update(extra)
    return merged


def splice_extras(body: bytes, extra_json: bytes, keep: Callable[[str], bool]) -> bytes:
    """`body` (a JSON object) with the client's vendor extras that `keep` accepts spliced into its top level,
    without re-encoding it. Extras that are not a JSON object are the client's error."""
    try:
        extras = _extras_decoder.decode(extra_json)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"extra fields are not a JSON object: {exc}", code="invalid_extra_fields") from exc
    kept = {k: v for k, v in extras.items() if keep(k)}
    if not kept:
        return body
    # Both are JSON objects and `body` always holds a field: join them at the brace.
    return body[:-1] + b"," + _extras_encoder.encode(kept)[1:]


_extras_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_extras_encoder = msgspec.json.Encoder()


def body_snippet(status: int, body: bytes) -> str:
    """What to tell the client when an error body is not the provider's usual JSON."""
    text = body.decode("utf-8", errors="replace").strip()
    return text[:200] if text else f"HTTP {status} with an empty body"


def bad_response(provider: str, detail: str) -> ProviderError:
    return _unusable(provider, f"unreadable response: {detail}", "provider_bad_response")


def stream_truncated(provider: str, terminator: str) -> ProviderError:
    """The upstream body ended before the stream's documented `terminator`: a cut answer is an error."""
    return _unusable(provider, f"the stream ended before {terminator}", "provider_stream_truncated")


def _unusable(provider: str, problem: str, code: str) -> ProviderError:
    return ProviderError(f"{provider}: {problem}", code=code, retryable=False, where=f"provider:{provider}")


# --- streaming -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Delta:
    """One increment of a streamed answer, in OpenAI's chunk terms (the worker numbers them)."""

    index: int = 0
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    # Extended thinking (as in `StreamChunk`): text, the signature that closes a block, a redacted block.
    thinking: str | None = None
    signature: str | None = None
    redacted_thinking: str | None = None
    server_block: bytes | None = None  # as in `StreamChunk`
    server_delta: bytes | None = None
    item_json: bytes | None = None  # see `StreamChunk.item_json`


@dataclass(slots=True)
class StreamSummary:
    """What is known once the upstream stream has ended properly."""

    id: str
    model: str
    created: int
    finish_reason: str | None
    usage: Usage | None
    stop_sequence: str | None = None  # which stop sequence ended it, when the provider says


class StreamDecoder(Protocol):
    """A stream body's framing: bytes in (split anywhere), complete `(event name or None, data)` out.

    SSE gives the `event:` name and the joined `data:` lines; AWS's event stream gives the `:event-type`
    (or, for an exception message, the `:exception-type`) and the JSON payload. One per response body.
    """

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]: ...


class StreamParser(Protocol):
    """Turns one provider's stream events into deltas. One parser per upstream call."""

    def feed(self, event: str | None, data: str) -> list[Delta]:
        """Handle one decoded event (its name or None, its data). Raises GatewayError for an error event
        in the stream."""
        ...

    def end(self) -> StreamSummary:
        """Called when the upstream body ended. Raises ProviderError if the stream was cut before its
        documented terminator (OpenAI `[DONE]`, Anthropic `message_stop`): a truncated answer is an error."""
        ...
