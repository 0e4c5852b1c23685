"""The HTTP answers of the edge: JSON bodies and SSE streams with the headers that say what happened, and
errors in the shape of the dialect the client called (OpenAI's, or Anthropic's on the Messages API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response, StreamingResponse

from services.ingress import anthropic_dialect, shapes
from services.ingress.context import SCOPE_KEY
from shared.errors import GatewayError, InternalError, InvalidRequest, NotFound
from shared.messages import ChatResult

log = logging.getLogger("llm_edge.ingress")

JSON = "application/json"
TIERS = {"l1": "hit-l1", "l2": "hit-l2", "semantic": "hit-semantic"}


class SemanticTier(str):
    """The tier `semantic`, equal to that string wherever a tier is read, carrying the match's similarity."""

    similarity: str  # as the cache service wrote it, e.g. "0.9731"

    def __new__(cls, similarity: str) -> SemanticTier:
        tier = super().__new__(cls, "semantic")
        tier.similarity = similarity
        return tier


def _cache_headers(headers: dict[str, str], tier: str | None) -> dict[str, str]:
    headers["x-llm-edge-cache"] = TIERS.get(tier or "", "miss")
    if isinstance(tier, SemanticTier):
        headers["x-llm-edge-cache-similarity"] = tier.similarity
    return headers


def sse_response(
    frames: AsyncIterator[bytes] | Iterator[bytes], rid: str, provider: str, tier: str | None
) -> Response:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers=_cache_headers({
            "x-request-id": rid,
            "x-llm-edge-provider": provider,
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        }, tier),
    )


def result_response(
    result: ChatResult, rid: str, tier: str | None, started: float, render: Callable[[ChatResult], bytes]
) -> Response:
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Response(
        render(result),
        media_type=JSON,
        headers=_cache_headers({
            "x-request-id": rid,
            "x-llm-edge-provider": result.provider,
            "x-llm-edge-model": result.target_model,
            "x-llm-edge-latency-ms": f"{elapsed_ms:.2f}",
            # A hit cost nothing: the stored answer keeps the cost of the call that made it.
            "x-llm-edge-cost-usd": f"{0.0 if tier else result.cost_usd:.8f}",
        }, tier),
    )


def exception_response(exc: Exception, connection: HTTPConnection) -> Response:
    """The one way an exception becomes an HTTP answer at the ingress, wherever it was raised: in an
    endpoint, or in FastAPI's routing (404, 405) or parameter validation."""
    return error_response(as_error(exc, connection), connection)


def as_error(exc: Exception, connection: HTTPConnection) -> GatewayError:
    """Any exception as the gateway's error: its own errors as they are, FastAPI's and Starlette's
    translated, anything else an internal error (logged with its traceback; never shown to the client)."""
    match exc:
        case GatewayError():
            return exc
        case HTTPException(status_code=404):
            return NotFound(f"Unknown path: {connection.scope.get('method', 'GET')} {connection.scope['path']}",
                            code="not_found")
        case HTTPException():
            return InvalidRequest(str(exc.detail), status=exc.status_code, code="http_error")
        case RequestValidationError():
            first = exc.errors()[0] if exc.errors() else {}
            param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
            return InvalidRequest(f"`{param}`: {first.get('msg', 'invalid')}." if param else "Invalid request.",
                                  param=param)
    log.error("unhandled error", exc_info=exc)
    return InternalError("internal error")


def error_response(error: GatewayError, connection: HTTPConnection) -> Response:
    headers = {}
    call = connection.scope.get(SCOPE_KEY)
    rid = None if call is None else call.rid
    if call is not None:
        call.error = error.code or error.error_type  # for the request log
    if rid:
        headers["x-request-id"] = rid
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, int(error.retry_after + 0.999)))
    if error.http_status >= 500:
        log.warning("request failed: %d %s (%s)", error.http_status, error.code, error.where or "ingress")
    # The body speaks the dialect of the endpoint that was called. DESIGN.md has every error OpenAI-shaped,
    # but a client of Anthropic's Messages API reads Anthropic's documented body (`type: "error"`, and error
    # types such as not_found_error or overloaded_error that OpenAI's vocabulary lacks), and a stream's
    # `error` event must be in that shape anyway; one shape per endpoint, then. The status is the gateway's
    # own either way, so each SDK raises the exception class that matches it, with our message.
    if anthropic_dialect.is_messages_path(str(connection.scope.get("path", ""))):
        body = anthropic_dialect.error_json(error, rid)
        if rid:
            headers["request-id"] = rid
    else:
        body = shapes.error_json(error)
    return Response(body, status_code=error.http_status, media_type=JSON, headers=headers)
