"""What goes to the backend for one request: the path and the body.

Chat and completions get the scheduling fields (router/routing/upstream_fields.py) and, on a
stream, the usage the length predictor learns from. A Responses or Messages request goes as
the chat completion it translates to, unless the backend serves that API itself; then, like
every other endpoint, it goes unchanged to the path the client called.
"""

from __future__ import annotations

from typing import Any

from triage_router.router.api_types import GENERATING, with_fields
from triage_router.router.config import BackendConfig
from triage_router.router.context import RequestContext
from triage_router.router.http.stream_usage import stream_options_with_usage
from triage_router.router.routing.admission import Job
from triage_router.router.routing.upstream_fields import scheduling_fields
from triage_router.router.translation.api_translation import ApiTranslation


def path_of(scope: dict[str, Any]) -> str:
    """The path and query the client called."""
    query = scope.get("query_string", b"")
    return scope["path"] + ("?" + query.decode("latin-1") if query else "")


def outgoing_request(
    ctx: RequestContext, job: Job, backend: BackendConfig, adds_usage: bool,
) -> tuple[str, bytes, ApiTranslation | None]:
    """(path, body, the translation to apply to the answer or None)."""
    translation = ctx.translation
    # An alias or a fallback: the backend is asked for its own name of the model.
    renamed = {"model": ctx.upstream_model} if ctx.upstream_model and ctx.upstream_model != ctx.model else {}
    multipart = ctx.headers.get("content-type", "").startswith("multipart/")
    if translation is not None:
        if translation.natively_served(backend):
            return ctx.path, with_fields(ctx.body, renamed), None
        fields = scheduling_fields(backend, job.priority, job.predicted_output_tokens, job.tenant) | renamed
        if translation.stream:  # the translator needs the usage for its last event
            fields["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", with_fields(translation.chat_body, fields), translation
    if ctx.endpoint not in GENERATING:
        return ctx.path, ctx.body if multipart else with_fields(ctx.body, renamed), None
    fields = scheduling_fields(backend, job.priority, job.predicted_output_tokens, job.tenant) | renamed
    if adds_usage:
        fields["stream_options"] = stream_options_with_usage(ctx.body)
    return ctx.path, with_fields(ctx.body, fields), None
