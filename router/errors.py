"""Errors Triage reports to clients, each mapped to an HTTP status and OpenAI's error shape.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``
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


class TriageError(Exception):
    """Base class: subclasses fix the status and OpenAI error type."""

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

    def body(self) -> bytes:
        return msgspec.json.encode(
            ErrorEnvelope(ErrorBody(self.message, self.error_type, self.param, self.code))
        )


class BadRequest(TriageError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(TriageError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class MethodNotAllowed(TriageError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class ModelNotFound(TriageError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class QueueTimeout(TriageError):
    """The request waited in the admission queue past its priority's timeout."""

    status = 408
    error_type = "timeout_error"
    code = "queue_timeout"


class QueueFull(TriageError):
    """The admission queue had no room, or shed this request for more urgent work."""

    status = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class BodyTooLarge(TriageError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamUnreachable(TriageError):
    """The upstream refused or reset the connection."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_unreachable"


class NoHealthyBackend(TriageError):
    status = 503
    error_type = "server_error"
    code = "no_healthy_backend"


class UpstreamTimeout(TriageError):
    status = 504
    error_type = "upstream_error"
    code = "upstream_timeout"
