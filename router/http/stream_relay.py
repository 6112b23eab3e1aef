"""The relay of a streamed answer: Server-Sent Events passed on as they arrive, translated to the
API the client called if it must be, with the usage event the router asked for held back.

Once the first byte has gone to the client there is no retry and no other status: a backend that
fails mid-stream is reported in the stream itself.
"""

from __future__ import annotations

import time

from triage_router.router.context import RequestContext
from triage_router.router.errors import UpstreamTimeout, UpstreamUnreachable
from triage_router.router.http.asgi_io import Send
from triage_router.router.http.first_token import carries_token
from triage_router.router.http.stream_usage import UsageFilter
from triage_router.router.http.usage_accounting import UsageAccounting
from triage_router.router.metrics import RouterMetrics
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.routing.upstream_connection import UpstreamResponse
from triage_router.router.translation.api_translation import StreamTranslation


class StreamRelay:
    def __init__(self, *, pool: BackendPool, metrics: RouterMetrics, usage: UsageAccounting,
                 failure_threshold: int) -> None:
        self.pool = pool
        self.metrics = metrics
        self.usage = usage
        self.failure_threshold = failure_threshold

    async def relay(
        self, ctx: RequestContext, backend: Backend, response: UpstreamResponse, send: Send,
        head: list[tuple[bytes, bytes]], translation: StreamTranslation | None, read_timeout_s: float,
    ) -> None:
        """Send `head`, then the stream's events, then its end; at most `read_timeout_s` between two
        pieces from the backend."""
        priority = str(ctx.priority.priority)
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        first = True
        first_token_at: float | None = None
        completion_tokens: int | None = None
        # Holds back the usage event the router asked for on the client's behalf.
        usage_filter = UsageFilter() if self.usage.adds_usage(ctx) else None
        try:
            async for chunk in response.chunks(read_timeout_s):
                if usage_filter is not None:
                    chunk = usage_filter.feed(chunk)
                    if usage_filter.usage_event is not None:
                        completion_tokens = self.usage.observe(ctx, usage_filter.usage_event)
                        usage_filter.usage_event = None
                    if not chunk:
                        continue
                elif b"completion_tokens" in chunk:
                    completion_tokens = self.usage.observe(ctx, chunk)
                if first_token_at is None and carries_token(chunk):
                    first_token_at = time.perf_counter()
                    ctx.outcome.ttft_s = first_token_at - ctx.arrived_at
                    self.metrics.child(self.metrics.time_to_first_token, priority, ctx.model).observe(
                        ctx.outcome.ttft_s)
                if translation is not None and not (chunk := translation.feed(chunk)):
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if first:
                    first = False
                    self.metrics.child(self.metrics.time_to_first_byte, priority, backend.name).observe(
                        time.perf_counter() - ctx.arrived_at
                    )
        except (UpstreamUnreachable, UpstreamTimeout) as error:
            # Too late to retry or change the status: tell the client in the stream itself.
            self.pool.mark_failure(backend, self.failure_threshold)
            self.metrics.child(self.metrics.errors, priority, backend.name, "upstream_broke_stream").inc()
            failure = type(error)
            message = f"backend {backend.name} failed mid-stream"
            event = b"data: " + failure(message).body() + b"\n\n"
            if translation is not None:
                event = translation.fail(message)
                translation = None
            if usage_filter is not None:
                # Whatever the filter holds was sent before the failure: it goes first.
                event = usage_filter.flush() + event
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if usage_filter is not None and (rest := usage_filter.flush()):
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        if translation is not None:
            await send({"type": "http.response.body", "body": translation.finish(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        ended = time.perf_counter()
        self.metrics.child(self.metrics.duration, priority, backend.name).observe(ended - ctx.arrived_at)
        if response.status == 200:
            self.metrics.child(self.metrics.e2e_latency, priority, ctx.model).observe(ended - ctx.arrived_at)
            if first_token_at is not None and completion_tokens is not None and completion_tokens > 1:
                self.metrics.child(self.metrics.time_per_output_token, priority, ctx.model).observe(
                    (ended - first_token_at) / (completion_tokens - 1)
                )
