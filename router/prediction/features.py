"""The length predictor's features, read from one request's context.

Kept apart from the predictor (router/prediction/length.py) so that the request context may name a
prediction without the predictor importing the context back.
"""

from __future__ import annotations

from triage_router.router.api_types import ChatCompletionRequest
from triage_router.router.context import RequestContext
from triage_router.router.prediction.length import LengthFeatures, verbosity_cue
from triage_router.router.request_text import latest_user_text

# The cue is read from this much of the latest user turn.
CUE_CHARS = 2000


def request_kind(ctx: RequestContext) -> str:
    request = ctx.request
    if not isinstance(request, ChatCompletionRequest):
        return "completion"
    if request.tools:
        return "tools"
    response_format = request.response_format
    if isinstance(response_format, dict) and str(response_format.get("type", "")).startswith("json"):
        return "json"
    return "chat"


def features_of(ctx: RequestContext, prompt_tokens: int) -> LengthFeatures:
    assert ctx.priority is not None
    return LengthFeatures(
        model=ctx.model,
        kind=request_kind(ctx),
        priority=ctx.priority.priority,
        source=ctx.priority.source,
        tenant=ctx.tenant,
        prompt_tokens=prompt_tokens,
        max_tokens=ctx.request.output_limit,
        cue=verbosity_cue(latest_user_text(ctx.request, CUE_CHARS)),
    )
