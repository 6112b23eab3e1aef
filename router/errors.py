"""Errors reported to clients, each mapped to an HTTP status and OpenAI's error shape:

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``

The one place that shape is built, for the router and for our engine (engine_server/errors.py
adds the engine's own). This module imports nothing of Triage, so the engine may import it.
"""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    """Base class: subclasses fix the status and OpenAI error type. Unsubclassed, a 500."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers (e.g. Retry-After)."""
        return []

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.error_type, self.param, self.code))

    def body(self) -> bytes:
        return msgspec.json.encode(self.envelope())


class BadRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        # RFC 9110: a 405 lists the methods the resource supports.
        return [(b"allow", self.allow.encode())] if self.allow else []


class ModelNotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class QueueTimeout(ApiError):
    """The request waited in the admission queue past its priority's timeout."""

    status = 408
    error_type = "timeout_error"
    code = "queue_timeout"


class QueueFull(ApiError):
    """The admission queue had no room for this request: 429, come back later."""

    status = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class Shed(QueueFull):
    """This waiting request was displaced by more urgent work: 503, the service is overloaded
    rather than the client too fast."""

    status = 503
    error_type = "server_error"
    code = "shed_for_more_urgent_work"


class RateLimited(ApiError):
    """A key went past its requests or tokens per minute, with OpenAI's x-ratelimit-* headers."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, limit_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit_headers = limit_headers

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode()), *self.limit_headers]


class HeadersTooLarge(ApiError):
    status = 431
    error_type = "invalid_request_error"
    code = "request_header_fields_too_large"


class BodyTooSlow(ApiError):
    """The body did not arrive within the server's deadline (a slow-drip client)."""

    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class HeadTooSlow(BodyTooSlow):
    """The request line and headers did not arrive within the server's deadline (a slowloris)."""


class BodyTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamUnreachable(ApiError):
    """The upstream refused or reset the connection."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_unreachable"


class NoHealthyBackend(ApiError):
    status = 503
    error_type = "server_error"
    code = "no_healthy_backend"

    def headers(self) -> list[tuple[bytes, bytes]]:
        # Probes bring a backend back within a second of its answering again, at first; the
        # OpenAI SDK and most clients wait this long before retrying a 503.
        return [(b"retry-after", b"1")]


class UpstreamTimeout(ApiError):
    status = 504
    error_type = "upstream_error"
    code = "upstream_timeout"


def for_status(status: int, message: str) -> ApiError:
    """The error for a status that the web framework itself raised (an unknown path, a wrong
    method, a malformed request line), so that those leave in OpenAI's shape too."""
    known: dict[int, type[ApiError]] = {404: NotFound, 405: MethodNotAllowed}
    if status in known:
        return known[status](message)
    error = ApiError(message)
    error.status = status
    error.error_type = "invalid_request_error" if status < 500 else "server_error"
    return error
