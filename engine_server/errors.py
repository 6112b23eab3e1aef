"""Errors the engine reports to clients, each with its HTTP status and OpenAI's error shape."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class EngineError(Exception):
    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.error_type, self.param, self.code))


class BadRequest(EngineError):
    status = 400
    error_type = "invalid_request_error"


class ModelNotFound(EngineError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(EngineError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(EngineError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class ContextTooLong(EngineError):
    status = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"


class EngineUnavailable(EngineError):
    status = 503
    error_type = "server_error"
    code = "engine_unavailable"
