#!/usr/bin/env python3
"""In-process CPU cost of the access log and of tracing, per request, below what run.py can resolve.

    .venv/bin/python bench/proxy_overhead/observability_cost.py

Times, best of three loops: building one access-log line, building and writing it to a file,
and one traced request's six spans recorded with the OpenTelemetry SDK (a batch processor, as
`triage serve` sets up, with an exporter that discards them, so that no network is timed).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage
from triage_router.router.config import ApiKeyConfig, BackendConfig, LengthConfig, LogConfig
from triage_router.router.context import Outcome, PriorityDecision, RequestContext
from triage_router.router.http.access_log import AccessLog, access_line
from triage_router.router.http.request_trace import RequestTrace
from triage_router.router.prediction.features import features_of
from triage_router.router.prediction.length import LengthPredictor
from triage_router.router.routing.admission import Job
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.fingerprint import PrefixFingerprint

SCOPE = {"method": "POST", "path": "/v1/chat/completions", "scheme": "http", "http_version": "1.1",
         "client": ("127.0.0.1", 50000)}


class _Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def microseconds(call: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    key = ApiKeyConfig(key_sha256="ab" * 32, name="team-a")
    request = ChatCompletionRequest("smol", [ChatMessage("user", "Say hi.")])
    ctx = RequestContext("74302af06204-1", "chat", {"content-type": "application/json"}, b"{}", request, key,
                         time.perf_counter(), "team-a", PriorityDecision(2, "default"))
    ctx.outcome = Outcome(status=200, backend="nginx", prompt_tokens=12, completion_tokens=7, queue_s=0.000226,
                          ttft_s=0.007927)
    ctx.predicted = LengthPredictor(LengthConfig()).predict(features_of(ctx, 3))

    def line() -> object:
        return access_line(SCOPE, ctx.request_id, ctx.arrived_at, time.perf_counter(), ctx.outcome, ctx, key)

    with tempfile.TemporaryDirectory() as folder:
        log = AccessLog(LogConfig(access_file=os.path.join(folder, "access.jsonl")))
        print(f"access line, built:            {microseconds(line, 100_000):6.2f} us")
        print(f"access line, built and written: {microseconds(lambda: log.write(line()), 100_000):6.2f} us")
        log.close()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    tracer = provider.get_tracer("bench")
    backend = Backend(BackendConfig(name="nginx", url="http://127.0.0.1:8000"), 256)
    job = Job(ctx.request_id, 2, 0.0, 3, ctx.predicted.median, PrefixFingerprint((), 3), frozenset({"nginx"}))

    def traced() -> None:
        arrived = time.perf_counter()
        trace = RequestTrace(tracer, SCOPE, {"content-type": "application/json"}, arrived, ctx.request_id, "chat")
        trace.priority(ctx.priority, arrived, time.perf_counter())
        trace.prediction(ctx.predicted, arrived, time.perf_counter())
        job.placed_at = time.perf_counter()
        trace.placed(job, "nginx", arrived, time.perf_counter(), lambda request_id: "cache-affinity: ...; nginx=0")
        call = trace.upstream(ctx, backend, "/v1/chat/completions", {}, 0)
        call.answered(200)
        call.end()
        trace.end(ctx.outcome, ctx, time.perf_counter())

    print(f"a traced request's six spans:   {microseconds(traced, 20_000):6.1f} us")
    provider.shutdown()


if __name__ == "__main__":
    main()
