"""Errors only the engine reports. The others, and OpenAI's error shape itself, come from
router/errors.py: one envelope for router and engine."""

from __future__ import annotations

from triage_router.router.errors import ApiError


class ContextTooLong(ApiError):
    status = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"


class EngineUnavailable(ApiError):
    status = 503
    error_type = "server_error"
    code = "engine_unavailable"
