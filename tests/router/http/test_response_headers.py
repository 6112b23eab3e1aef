from __future__ import annotations

from triage_router.router.api_types import PassthroughRequest
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.http.response_headers import response_head


def test_the_backends_hop_by_hop_and_triage_headers_are_replaced_by_ours() -> None:
    ctx = RequestContext("r-1", "passthrough", {}, b"{}", PassthroughRequest(model="m"), None, 0.0,
                         priority=PriorityDecision(1, "header", clamped_from=0))
    # Names in lower case, as UpstreamResponse keeps them.
    upstream = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"),
                (b"x-triage-priority", b"4"), (b"x-upstream", b"kept")]
    head = dict(response_head(upstream, ctx, "alpha", 12, "least loaded"))
    assert head[b"content-type"] == b"application/json" and head[b"x-upstream"] == b"kept"
    assert b"transfer-encoding" not in head
    assert head[b"x-triage-priority"] == b"1" and head[b"x-triage-priority-clamped-from"] == b"0"
    assert head[b"content-length"] == b"12" and head[b"x-triage-backend"] == b"alpha"
    assert head[b"x-triage-placement"] == b"least loaded" and head[b"x-request-id"] == b"r-1"
