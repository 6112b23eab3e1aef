"""The head of a relayed answer: the backend's end-to-end headers, and Triage's own `x-triage-*`
headers saying how the request was handled (its priority and where it came from, the predicted
length, the backend, and, on request, the placement's explanation)."""

from __future__ import annotations

from typing import Any

from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.routing.upstream import HOP_BY_HOP_BYTES

_OWN_HEADERS = frozenset(
    {b"x-request-id", b"x-triage-priority", b"x-triage-priority-source", b"x-triage-priority-clamped-from",
     b"x-triage-priority-adjusted-by", b"x-triage-backend", b"x-triage-placement", b"x-triage-predicted-tokens",
     b"x-triage-predicted-tokens-high"}
)
_NOT_RELAYED = HOP_BY_HOP_BYTES | _OWN_HEADERS
# A request carrying this header gets the placement explained in `x-triage-placement`.
DEBUG_HEADER = "x-triage-debug"


def triage_headers(request_id: str, decision: PriorityDecision | None) -> list[tuple[bytes, bytes]]:
    head = [(b"x-request-id", request_id.encode("latin-1"))]
    if decision is not None:
        head.append((b"x-triage-priority", str(decision.priority).encode()))
        head.append((b"x-triage-priority-source", decision.source.encode()))
        if decision.clamped_from is not None:
            head.append((b"x-triage-priority-clamped-from", str(decision.clamped_from).encode()))
        if decision.adjusted_by:
            head.append((b"x-triage-priority-adjusted-by", ",".join(decision.adjusted_by).encode("latin-1", "replace")))
    return head


def response_head(
    upstream_headers: Any,
    ctx: RequestContext,
    backend: str | None,
    content_length: int | None,
    explanation: str | None,
) -> list[tuple[bytes, bytes]]:
    """The backend's headers less hop-by-hop ones and any `x-triage-*` it sent, then ours.
    `upstream_headers` is a sequence of (name, value) byte pairs, names in lower case (as
    UpstreamResponse keeps them)."""
    head = [header for header in upstream_headers if header[0] not in _NOT_RELAYED]
    if content_length is not None:
        head.append((b"content-length", str(content_length).encode()))
    head.extend(triage_headers(ctx.request_id, ctx.priority))
    if ctx.predicted is not None:
        head.append((b"x-triage-predicted-tokens", str(ctx.predicted.median).encode()))
        head.append((b"x-triage-predicted-tokens-high", str(ctx.predicted.high).encode()))
    if backend is not None:
        head.append((b"x-triage-backend", backend.encode()))
        if explanation is not None:
            head.append((b"x-triage-placement", explanation.encode("latin-1", "replace")))
    return head
