"""The gateway's error hierarchy: each class knows its HTTP status and OpenAI error type and code.

Errors cross the bus as `ErrorReply` and are rebuilt on the other side with `from_reply`, which finds the
class by the error's code (every class with a code of its own registers it), so a `ContextWindowExceeded`
raised in a provider worker is a `ContextWindowExceeded` in the router. The status a client sees is decided
where the failure happened, never guessed from message text.
"""

from __future__ import annotations

from typing import ClassVar

from shared.messages import ErrorReply

_BY_CODE: dict[str, type[GatewayError]] = {}


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None  # the class's code: `from_reply` finds the class by it
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("default_code")
        if code is None:
            return  # inherits its parent's code, and so its parent's entry
        if (taken := _BY_CODE.get(code)) is not None and taken.__qualname__ != cls.__qualname__:
            raise TypeError(f"error code {code!r} is already {taken.__qualname__}'s")
        _BY_CODE[code] = cls

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        where: str = "",
        status: int | None = None,
        retryable: bool | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.retry_after = retry_after
        self.where = where
        # An upstream error keeps the upstream's own status (e.g. 529) when it is more precise.
        self.http_status = status if status is not None else self.status
        self.is_retryable = self.retryable if retryable is None else retryable
        self.error_type = error_type or self.type

    def to_reply(self) -> ErrorReply:
        return ErrorReply(
            status=self.http_status,
            type=self.error_type,
            message=self.message,
            code=self.code,
            param=self.param,
            retryable=self.is_retryable,
            retry_after=self.retry_after,
            where=self.where,
        )


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class ContextWindowExceeded(InvalidRequest):
    """The prompt does not fit the target model's context window (each adapter recognises its provider's
    wording of it); the router may move on to a target with a larger window."""

    default_code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"  # what OpenAI sends with a 401
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"


class Conflict(GatewayError):
    """The request contradicts what is stored: a name taken, a read-only entry, a write that lost a race."""

    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class QuotaExceeded(GatewayError):
    """The key's budget is spent: a 429 that waiting a few seconds does not cure (OpenAI's shape)."""

    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class InternalError(GatewayError):
    status = 500
    type = "api_error"
    default_code = "internal_error"


class ProviderError(GatewayError):
    """The upstream provider failed or answered with something we cannot use."""

    status = 502
    type = "api_error"
    default_code = "provider_error"
    retryable = True


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    default_code = "service_unavailable"
    retryable = True


class DeadlineExceeded(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "deadline_exceeded"
    retryable = True


_BY_STATUS: dict[int, type[GatewayError]] = {  # for codes no class claims
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: BodyTooLarge,
    429: RateLimited,
    500: InternalError,
    502: ProviderError,
    503: Unavailable,
    504: DeadlineExceeded,
}


def error_class(code: str | None, status: int) -> type[GatewayError]:
    """The class that owns `code`; for a code no class claims (or none), the class for `status`."""
    if code is not None and (cls := _BY_CODE.get(code)) is not None:
        return cls
    return _BY_STATUS.get(status, ProviderError if status >= 500 else InvalidRequest)


def from_reply(reply: ErrorReply) -> GatewayError:
    """Rebuild the error a remote service sent as the same class, keeping its exact status, type and code."""
    cls = error_class(reply.code, reply.status)
    return cls(
        reply.message,
        code=reply.code,
        param=reply.param,
        retry_after=reply.retry_after,
        where=reply.where,
        status=reply.status,
        retryable=reply.retryable,
        error_type=reply.type,
    )
