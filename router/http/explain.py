"""POST /triage/explain/<relay path>: what Triage would decide for a request, without sending it.

The request goes through everything a real one does up to the choice of a backend (its key and
rate limit, the priority decision, the length prediction, the candidates' saturation and scores),
and the answer is that decision as JSON. No slot is taken and nothing goes upstream. `triage
explain` (router/cli/explain.py) prints it.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from triage_router.policies.placement import Placement
from triage_router.router.context import RequestContext
from triage_router.router.errors import ApiError, MethodNotAllowed, NotFound
from triage_router.router.http.asgi_io import Receive, Send
from triage_router.router.routing.admission import Job
from triage_router.router.routing.dispatcher import CacheView

EXPLAIN_PREFIX = "/triage/explain"


class Explainable(Protocol):
    """A relay endpoint (router/http/proxy.py) that can stop at the decision."""

    generates: bool

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send, explain: bool = False) -> None: ...

    async def reject(self, scope: dict[str, Any], send: Send, error: ApiError) -> None: ...


class ExplainEndpoint:
    """Answers for every relay path that generates, behind EXPLAIN_PREFIX."""

    def __init__(self, relays: dict[str, Explainable]) -> None:
        self.relays = relays

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"].removeprefix(EXPLAIN_PREFIX)
        endpoint = self.relays.get(path)
        if endpoint is None or not endpoint.generates:
            explained = ", ".join(p for p, e in self.relays.items() if e.generates)
            await next(iter(self.relays.values())).reject(
                scope, send, NotFound(f"no decision to explain for {path!r}; try one of: {explained}"))
            return
        if scope["method"] != "POST":
            await endpoint.reject(scope, send, MethodNotAllowed(f"use POST for {scope['path']}", allow="POST"))
            return
        # Refused as a real request would be (bad key, bad body, rate limit), else the decision.
        await endpoint(scope, receive, send, explain=True)


async def reply_explanation(send: Send, decision: dict[str, Any]) -> None:
    body = msgspec.json.encode(decision)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def explanation(ctx: RequestContext, job: Job, routed_model: str, placement: Placement,
                saturated: dict[str, str], caches: dict[str, CacheView]) -> dict[str, Any]:
    """The decision as JSON: priority and its source, predicted length, each candidate and why."""
    assert ctx.priority is not None
    predicted = ctx.predicted
    return {
        "request_id": ctx.request_id,
        "model": ctx.model,
        "routed_model": routed_model,
        "priority": {"level": ctx.priority.priority, "source": ctx.priority.source,
                     "clamped_from": ctx.priority.clamped_from, "adjusted_by": list(ctx.priority.adjusted_by)},
        "tenant": ctx.tenant,
        "session": job.session,
        "prompt_tokens": job.prompt_tokens,
        "predicted_output_tokens": None if predicted is None else
        {"median": predicted.median, "high": predicted.high, "mean": round(predicted.mean, 1)},
        "placement": {"backend": placement.backend, "policy": placement.policy, "reason": placement.reason,
                      # None: every candidate is saturated, so it would wait in the admission queue.
                      "would_wait": placement.backend is None},
        "candidates": [{"backend": c.backend, "eligible": c.eligible, "score": c.score, "reason": c.reason}
                       for c in placement.candidates],
        "saturated": saturated,
        # What each eligible candidate holds of the prompt, and which index says so.
        "cache": {name: {"matched_tokens": view.matched_tokens, "share": round(view.share, 4), "source": view.source}
                  for name, view in caches.items()},
    }
