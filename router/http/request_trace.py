"""The spans of one request, while tracing is on (router/http/tracing.py turns it on).

A SERVER span runs from arrival to the last byte sent, as a child of the client's `traceparent`
when it sends one. Under it: `triage.priority` (tagging), `triage.prediction` (the predicted
output length), `triage.queue` (the admission wait) and `triage.placement` (the backend chosen,
and why), then one CLIENT span per upstream attempt, whose context goes to the backend as
`traceparent` (and `tracestate`), so that vLLM's own spans join the trace.

The steps are recorded after the fact, from times the proxy notes anyway: it calls one hook per
step instead of opening and closing spans around its code. Attribute names follow
OpenTelemetry's HTTP and GenAI semantic conventions where they have one; Triage's own decisions
are `triage.*`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from triage_router.router.context import Outcome, PriorityDecision, RequestContext
from triage_router.router.prediction.length import LengthPrediction
from triage_router.router.routing.admission import Job
from triage_router.router.routing.backends import Backend

# gen_ai.operation.name for each endpoint; a Responses or Messages request is routed as a chat.
_OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings",
               "responses": "chat", "messages": "chat"}
# gen_ai.provider.name for each kind of backend.
_PROVIDERS = {"openai": "openai", "vllm": "vllm", "engine": "triage"}


class UpstreamCall:
    """The CLIENT span of one attempt on one backend."""

    __slots__ = ("span", "outcome")

    def __init__(self, span: Span, outcome: Outcome) -> None:
        self.span = span
        self.outcome = outcome

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))

    def failed(self, error: str) -> None:
        """No answer at all: unreachable, or too slow."""
        self.span.set_attribute("error.type", error)
        self.span.set_status(Status(StatusCode.ERROR))

    def end(self) -> None:
        """After the answer is relayed, or the attempt given up."""
        if self.outcome.prompt_tokens is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", self.outcome.prompt_tokens)
        if self.outcome.completion_tokens is not None:
            self.span.set_attribute("gen_ai.usage.output_tokens", self.outcome.completion_tokens)
        self.span.end()


class RequestTrace:
    """The SERVER span of one request, and the hooks that add its steps' spans."""

    __slots__ = ("tracer", "span", "_context", "_offset_ns")

    def __init__(self, tracer: Tracer, scope: dict[str, Any], headers: dict[str, str], arrived: float,
                 request_id: str, endpoint: str) -> None:
        """`arrived` is the request's `time.perf_counter()` reading."""
        self.tracer = tracer
        # The passthrough relay takes any path under /v1/: too many to name spans by.
        route = None if endpoint == "passthrough" else scope["path"]
        # perf_counter readings to the epoch nanoseconds spans carry.
        self._offset_ns = time.time_ns() - time.perf_counter_ns()
        method = scope["method"]
        attributes: dict[str, Any] = {
            "http.request.method": method, "url.path": scope["path"], "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"), "triage.request_id": request_id,
        }
        if route is not None:
            attributes["http.route"] = route
        if client := scope.get("client"):
            attributes["client.address"] = client[0]
        self.span = tracer.start_span(f"{method} {route}" if route else method, propagate.extract(headers),
                                      SpanKind.SERVER, attributes, start_time=self._ns(arrived))
        self._context = trace.set_span_in_context(self.span)

    def _ns(self, perf_counter_s: float) -> int:
        return self._offset_ns + int(perf_counter_s * 1e9)

    def _step(self, name: str, started: float, ended: float, attributes: dict[str, Any]) -> None:
        span = self.tracer.start_span(name, self._context, attributes=attributes, start_time=self._ns(started))
        span.end(end_time=self._ns(ended))

    def priority(self, decision: PriorityDecision, started: float, ended: float) -> None:
        attributes: dict[str, Any] = {"triage.priority": decision.priority, "triage.priority.source": decision.source}
        if decision.clamped_from is not None:
            attributes["triage.priority.clamped_from"] = decision.clamped_from
        if decision.adjusted_by:
            attributes["triage.priority.adjusted_by"] = list(decision.adjusted_by)
        self._step("triage.priority", started, ended, attributes)

    def prediction(self, predicted: LengthPrediction, started: float, ended: float) -> None:
        self._step("triage.prediction", started, ended, {"triage.predicted_tokens": predicted.median,
                                                          "triage.predicted_tokens.high": predicted.high})

    def placed(self, job: Job, backend: str, asked: float, returned: float, explanation: Callable[[str], str]) -> None:
        """The admission wait, from `asked` to the slot taken (`job.placed_at`), then the
        placement's decision; `explanation(request_id)` says why `backend`."""
        self._step("triage.queue", asked, job.placed_at, {"triage.queue.wait_s": job.placed_at - asked})
        # The explanation formats every candidate: only for a span that is kept.
        why = explanation(job.request_id) if self.span.is_recording() else ""
        self._step("triage.placement", job.placed_at, returned,
                   {"triage.backend": backend, "triage.placement": why, "triage.attempt": len(job.exclude)})

    def upstream(self, ctx: RequestContext, backend: Backend, path: str, headers: dict[str, str],
                 attempt: int) -> UpstreamCall:
        """Opens the CLIENT span of an attempt; its context goes in `headers` as `traceparent`
        (replacing the client's, which is this trace's parent)."""
        url = urlsplit(backend.base_url + path)
        if url.username or url.password:  # as the HTTP conventions ask: never credentials in url.full
            url = url._replace(netloc="REDACTED:REDACTED@" + url.netloc.rpartition("@")[2])
        operation = _OPERATIONS.get(ctx.endpoint)
        model = ctx.upstream_model or ctx.model
        attributes: dict[str, Any] = {
            "http.request.method": "POST", "url.full": url.geturl(), "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80), "triage.backend": backend.name,
            "gen_ai.provider.name": _PROVIDERS[backend.config.kind], "gen_ai.request.model": model,
        }
        if attempt:
            attributes["http.request.resend_count"] = attempt
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
        span = self.tracer.start_span(f"{operation} {model}" if operation else "POST", self._context,
                                      SpanKind.CLIENT, attributes)
        propagate.inject(headers, trace.set_span_in_context(span))
        return UpstreamCall(span, ctx.outcome)

    def end(self, outcome: Outcome, ctx: RequestContext | None, ended: float) -> None:
        span = self.span
        if span.is_recording():
            attributes: dict[str, Any] = {"triage.client_disconnected": outcome.client_gone}
            if outcome.status:
                attributes["http.response.status_code"] = outcome.status
            if outcome.error or outcome.status >= 500:
                attributes["error.type"] = outcome.error or str(outcome.status)
            if ctx is not None:
                attributes.update({"gen_ai.request.model": ctx.model, "gen_ai.request.stream": ctx.stream})
                if ctx.tenant:
                    attributes["triage.tenant"] = ctx.tenant
                if (operation := _OPERATIONS.get(ctx.endpoint)) is not None:
                    attributes["gen_ai.operation.name"] = operation
                if ctx.priority is not None:
                    attributes.update({"triage.priority": ctx.priority.priority,
                                       "triage.priority.source": ctx.priority.source})
                if ctx.predicted is not None:
                    attributes["triage.predicted_tokens"] = ctx.predicted.median
            for name, value in (("triage.backend", outcome.backend or None),
                                ("gen_ai.usage.input_tokens", outcome.prompt_tokens),
                                ("gen_ai.usage.output_tokens", outcome.completion_tokens),
                                ("triage.queue.wait_s", outcome.queue_s), ("triage.ttft_s", outcome.ttft_s)):
                if value is not None:
                    attributes[name] = value
            span.set_attributes(attributes)
            # A server span is an error for what the server got wrong, not for a refused request.
            if outcome.status >= 500 or not outcome.status and not outcome.client_gone:
                span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=self._ns(ended))
