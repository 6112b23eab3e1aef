"""The data path: an OpenAI endpoint, relayed to a backend chunk by chunk.

Chat and legacy completions get the whole treatment: priority, length prediction, cache
affinity, scheduling fields for the backend. Embeddings get priority and admission. Any other
POST path (tokenize, rerank, score, audio, what vLLM adds next) is routed by its `model` and
forwarded unchanged.

This is a raw ASGI handler rather than a litestar route with a Request and a Response: the
proxy must cost next to nothing per request, and it needs the ASGI `receive` channel itself to
notice a client that goes away while the upstream is still working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triage_router.router.routing.admission import Job
from triage_router.router.api_types import GENERATING, Endpoint, decode_request
from triage_router.router.http.asgi_io import (CLIENT_LINK, ClientGone, DisconnectWatch, Receive, Send,
                                               check_headers, new_request_id, read_body)
from triage_router.router.http import tracing
from triage_router.router.http.access_log import AccessLog, access_line
from triage_router.router.http.auth import ApiKeys, tenant_of
from triage_router.router.http.outgoing import outgoing_request, path_of
from triage_router.router.http.response_headers import DEBUG_HEADER, response_head, triage_headers
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.config import ApiKeyConfig, Config
from triage_router.router.context import Outcome, PriorityDecision, RequestContext
from triage_router.router.routing.dispatcher import Dispatcher
from triage_router.router.routing.kv_events.feeds import KVEventFeeds
from triage_router.router.errors import ApiError, BodyTooLarge, ModelNotFound, NoHealthyBackend, NotFound, \
    UpstreamTimeout, UpstreamUnreachable
from triage_router.router.routing.fingerprint import PrefixFingerprint, fingerprint
from triage_router.router.routing.models import ModelRoutes
from triage_router.router.routing.session import session_of
from triage_router.router.http.explain import explanation, reply_explanation
from triage_router.router.prediction.length import LengthPredictor
from triage_router.router.prediction.features import features_of
from triage_router.router.metrics import NO_BACKEND, RouterMetrics
from triage_router.router.tagging.priority import PriorityResolver
from triage_router.router.translation.api_translation import (
    TRANSLATED_ENDPOINTS,
    ApiTranslation,
    error_body,
)
from triage_router.router.http.stream_relay import StreamRelay
from triage_router.router.http.usage_accounting import UsageAccounting
from triage_router.router.routing.upstream import UpstreamClient, forwarded_headers
from triage_router.router.routing.upstream_connection import UpstreamResponse

if TYPE_CHECKING:  # imported only once tracing is on: it imports OpenTelemetry
    from triage_router.router.http.request_trace import UpstreamCall

log = logging.getLogger("triage.proxy")

# Upstream answers that mean "this backend, not this request": try another one.
RETRYABLE_STATUSES = frozenset({502, 503, 504})
_JSON = (b"content-type", b"application/json")


@dataclass(slots=True)
class _BufferedAnswer:
    """A retryable upstream answer, kept to relay as-is if no other backend does better."""

    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class ProxyEndpoint:
    """Serves one kind of endpoint (module docstring) on the paths it is mounted at."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        config: Config,
        pool: BackendPool,
        upstream: UpstreamClient,
        resolver: PriorityResolver,
        api_keys: ApiKeys,
        metrics: RouterMetrics,
        dispatcher: Dispatcher,
        predictor: LengthPredictor,
        access_log: AccessLog | None,
        kv_feeds: KVEventFeeds,
    ) -> None:
        self.endpoint = endpoint
        self.generates = endpoint in GENERATING
        self.pool = pool
        self.upstream = upstream
        self.resolver = resolver
        self.api_keys = api_keys
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.predictor = predictor
        self.access_log = access_log
        self.kv_feeds = kv_feeds
        self.routing = config.routing
        self.server = config.server
        self.max_body = config.server.max_body_bytes
        self.max_attempts = config.upstream.max_attempts
        self.tenant_header = config.admission.tenant_header
        self.failure_threshold = config.upstream.failure_threshold
        self.model_routes = ModelRoutes(config.models)
        self.usage = UsageAccounting(generates=self.generates, stream_usage=config.length.stream_usage,
                                     api_keys=api_keys, predictor=predictor, dispatcher=dispatcher, metrics=metrics)
        self.streams = StreamRelay(pool=pool, metrics=metrics, usage=self.usage,
                                   failure_threshold=self.failure_threshold)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send, explain: bool = False) -> None:
        """Relay one request; with `explain`, answer with the decision instead (router/http/explain.py)."""
        arrived = time.perf_counter()
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        request_id = headers.get("x-request-id") or new_request_id()
        outcome = Outcome()
        trace = (tracing.start_request(scope, headers, arrived, request_id, self.endpoint)
                 if tracing.start_request is not None else None)
        ctx: RequestContext | None = None
        api_key: ApiKeyConfig | None = None
        try:
            try:
                check_headers(scope["headers"], self.server.max_headers, self.server.max_header_bytes)
                declared = headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_body:
                    raise BodyTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
                api_key = self.api_keys.authenticate(headers)
                await self.api_keys.admit(api_key)
                body = await read_body(receive, self.max_body, self.server.body_deadline_s, scope.get(CLIENT_LINK))
                translation = None
                if self.endpoint in TRANSLATED_ENDPOINTS:
                    # Routed as the chat completion it translates to: tagging, prediction and cache
                    # affinity read the same request whichever API it came in.
                    translation = ApiTranslation.of(self.endpoint, body)
                    request = decode_request("chat", translation.chat_body)
                else:
                    request = decode_request(self.endpoint, body, headers.get("content-type", "application/json"))
                ctx = RequestContext(request_id, self.endpoint, headers, body, request, api_key, arrived,
                                     tenant_of(api_key, headers, self.tenant_header), path=path_of(scope),
                                     translation=translation, outcome=outcome, trace=trace)
                resolving = time.perf_counter()
                ctx.priority = await self.resolver.resolve(ctx)
                if trace is not None:
                    trace.priority(ctx.priority, resolving, time.perf_counter())
            except ClientGone:
                outcome.client_gone = True
                return
            except ApiError as error:
                await self._reply_error(send, error, request_id, None, outcome)
                self._count_failure("none", NO_BACKEND, error.code or error.error_type, error.status)
                return

            watch = DisconnectWatch(scope, receive)
            try:
                if explain:
                    await reply_explanation(send, await self._explain(ctx))
                else:
                    await self._relay(ctx, send)
            except asyncio.CancelledError:
                if not watch.happened:
                    raise
                # Our own cancellation, not the server's: the client left, so the task carries on.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                outcome.client_gone = True
                self.metrics.child(self.metrics.errors, str(ctx.priority.priority), NO_BACKEND,
                                   "client_disconnect").inc()
            except ApiError as error:
                await self._reply_error(send, error, request_id, ctx.priority, outcome)
                self._count_failure(str(ctx.priority.priority), NO_BACKEND, error.code or error.error_type,
                                    error.status, ctx)
            finally:
                watch.stop()
        finally:
            ended = time.perf_counter()
            if self.access_log is not None:
                self.access_log.write(access_line(scope, request_id, arrived, ended, outcome, ctx, api_key))
            if trace is not None:
                trace.end(outcome, ctx, ended)

    async def _explain(self, ctx: RequestContext) -> dict[str, Any]:
        """What would happen to the request now, taking no slot and sending nothing."""
        for model in self.model_routes.chain(ctx.model):
            if candidates := self.pool.serving(model):
                job = await self._job(ctx, candidates)
                return explanation(ctx, job, model, *self.dispatcher.preview(job))
        raise ModelNotFound(f"the model `{ctx.model}` does not exist or no backend serves it", param="model")

    async def _job(self, ctx: RequestContext, candidates: list[Backend]) -> Job:
        assert ctx.priority is not None
        session = session_of(ctx.headers, ctx.request, self.routing.session_header, self.routing.session_fields)
        if self.generates:
            prefix = fingerprint(ctx.request, self.routing.block_chars, self.routing.max_blocks)  # type: ignore[arg-type]
            predicting = time.perf_counter()
            ctx.predicted = self.predictor.predict(features_of(ctx, prefix.prompt_tokens))
            if ctx.trace is not None:
                ctx.trace.prediction(ctx.predicted, predicting, time.perf_counter())
            self.metrics.child(self.metrics.predicted_output_tokens, str(ctx.priority.priority)).observe(ctx.predicted.median)
            # The exact prompt tokens, for the candidates that publish KV events.
            body = ctx.translation.chat_body if ctx.translation is not None else ctx.body
            tokenized = await self.kv_feeds.tokenize(body, self.endpoint != "completions", candidates)
        else:
            # No prompt to match against caches, no output to predict: the body's size stands in
            # for the work, at the fingerprint's own characters per token.
            prefix = PrefixFingerprint((), len(ctx.body))
            tokenized = {}
        return Job(
            ctx.request_id,
            ctx.priority.priority,
            self.dispatcher.clock(),
            prefix.prompt_tokens,
            ctx.predicted.median if ctx.predicted is not None else 0,
            prefix,
            frozenset(backend.name for backend in candidates),
            session=session,
            app=session or "",
            tenant=ctx.tenant,
            model=ctx.model, priority_source=ctx.priority.source, tokenized=tokenized,
        )

    async def _relay(self, ctx: RequestContext, send: Send) -> None:
        """The model asked for, then its fallback, if any: the first answer goes to the client."""
        failure: ApiError | _BufferedAnswer | None = None
        for model in self.model_routes.chain(ctx.model):
            if candidates := self.pool.serving(model):
                ctx.upstream_model = model
                if (failure := await self._attempts(ctx, await self._job(ctx, candidates), send)) is None:
                    return
        if failure is None:
            raise ModelNotFound(f"the model `{ctx.model}` does not exist or no backend serves it", param="model")
        if isinstance(failure, ApiError):
            raise failure
        ctx.outcome.status, ctx.outcome.error = failure.status, f"upstream_{failure.status}"
        await send({"type": "http.response.start", "status": failure.status,
                    "headers": self._head(failure.raw_headers, ctx, None, len(failure.body))})
        await send({"type": "http.response.body", "body": failure.body})
        self.metrics.child(self.metrics.requests, self.endpoint, str(ctx.priority.priority), NO_BACKEND,
                           model_label(ctx), str(failure.status)).inc()

    async def _attempts(self, ctx: RequestContext, job: Job, send: Send) -> ApiError | _BufferedAnswer | None:
        """Up to `max_attempts` backends for one model; None once the client has its answer."""
        failure: ApiError | _BufferedAnswer | None = None
        for attempt in range(self.max_attempts):
            asked = self.dispatcher.clock()
            try:
                backend = await self.dispatcher.acquire(job)
            except NoHealthyBackend as none_healthy:
                return failure or none_healthy
            finally:
                if not attempt:  # a retry's second placement is not queueing
                    ctx.outcome.queue_s = self.dispatcher.clock() - job.arrival
            if attempt:
                self.metrics.child(self.metrics.retries, backend.name).inc()
            if ctx.trace is not None:
                ctx.trace.placed(job, backend.name, asked, self.dispatcher.clock(), self.dispatcher.explanation)
            try:
                failure = await self._attempt(ctx, job, backend, send)
            finally:
                self.dispatcher.release(backend, job)
            if failure is None:
                return None
            job.exclude = job.exclude | {backend.name}
        return failure

    async def _attempt(
        self, ctx: RequestContext, job: Job, backend: Backend, send: Send
    ) -> ApiError | _BufferedAnswer | None:
        """One try on one backend. Returns None once the client has its answer, else why it failed."""
        priority = str(ctx.priority.priority)
        in_flight = self.metrics.child(self.metrics.in_flight, priority, backend.name)
        in_flight.inc()
        call: UpstreamCall | None = None
        try:
            headers = forwarded_headers(ctx.headers, backend, ctx.request_id)
            path, body, translation = outgoing_request(ctx, job, backend.config, self.usage.adds_usage(ctx))
            if ctx.trace is not None:
                call = ctx.trace.upstream(ctx, backend, path, headers, len(job.exclude))
            try:
                response = await self.upstream.post(backend, path, headers, body)
            except (UpstreamUnreachable, UpstreamTimeout) as error:
                self.pool.mark_failure(backend, self.failure_threshold)
                self._count_failure(priority, backend.name, error.code or "upstream", None)
                if call is not None:
                    call.failed(error.code or "upstream")
                return error
            if call is not None:
                call.answered(response.status)
            try:
                return await self._answer(ctx, backend, response, send, translation)
            finally:
                response.close()
        finally:
            in_flight.dec()
            if call is not None:
                call.end()

    async def _answer(
        self, ctx: RequestContext, backend: Backend, response: UpstreamResponse, send: Send,
        translation: ApiTranslation | None,
    ) -> ApiError | _BufferedAnswer | None:
        priority = str(ctx.priority.priority)
        streaming = response.content_type == "text/event-stream"
        if response.status == 429:
            self.dispatcher.on_refusal(backend)
        read_timeout = self.upstream.read_timeout(backend)
        try:
            if response.status in RETRYABLE_STATUSES:
                body = await response.read(read_timeout)
                self.pool.mark_failure(backend, self.failure_threshold)
                self._count_failure(priority, backend.name, f"upstream_{response.status}", None)
                return _BufferedAnswer(response.status, tuple(response.raw_headers), body)
            if not streaming:
                # Read it all before sending a byte: a failure midway can still go to another backend.
                body = await response.read(read_timeout)
                if response.status == 404 and not self.generates and b'"error"' not in body:
                    # The backend does not serve this path at all: say so in OpenAI's shape.
                    not_found = NotFound(f"backend {backend.name} does not serve POST {ctx.path}")
                    ctx.outcome.backend = backend.name
                    await self._reply_error(send, not_found, ctx.request_id, ctx.priority, ctx.outcome)
                    self._count_failure(priority, backend.name, "path_not_served", 404, ctx)
                    return None
        except (UpstreamUnreachable, UpstreamTimeout) as error:
            self.pool.mark_failure(backend, self.failure_threshold)
            mapped = type(error)(f"backend {backend.name}: {error.message}")
            self._count_failure(priority, backend.name, mapped.code or "upstream", None)
            return mapped

        ctx.outcome.status, ctx.outcome.backend = response.status, backend.name
        if streaming:
            await self.streams.relay(ctx, backend, response, send, self._head(response.raw_headers, ctx, backend, None),
                                     translation.stream_translation() if translation is not None else None,
                                     read_timeout)
        else:
            # Usage sits at the end of an OpenAI answer; it is learned from once the client has
            # the answer, so that learning costs the client nothing.
            usage = body[-512:]
            if translation is not None:
                body = translation.answer(response.status, body)
            await send({"type": "http.response.start", "status": response.status,
                        "headers": self._head(response.raw_headers, ctx, backend, len(body))})
            await send({"type": "http.response.body", "body": body})
            elapsed = ctx.outcome.ttft_s = time.perf_counter() - ctx.arrived_at
            if response.status == 200:
                self.usage.observe(ctx, usage)
            self.metrics.child(self.metrics.time_to_first_byte, priority, backend.name).observe(elapsed)
            self.metrics.child(self.metrics.duration, priority, backend.name).observe(elapsed)
            if response.status == 200:
                self.metrics.child(self.metrics.e2e_latency, priority, ctx.model).observe(elapsed)
        if response.status < 500:
            backend.record_success()
        self.metrics.child(self.metrics.requests, self.endpoint, priority, backend.name, model_label(ctx),
                           str(response.status)).inc()
        return None

    def _head(
        self, upstream_headers: Any, ctx: RequestContext, backend: Backend | None, content_length: int | None,
    ) -> list[tuple[bytes, bytes]]:
        explanation = None
        if backend is not None and DEBUG_HEADER in ctx.headers:
            explanation = self.dispatcher.explanation(ctx.request_id)
        return response_head(upstream_headers, ctx, backend.name if backend else None, content_length, explanation)

    async def reject(self, scope: dict[str, Any], send: Send, error: ApiError) -> None:
        """Answer with an error before any routing (e.g. a wrong method)."""
        arrived, request_id, outcome = time.perf_counter(), new_request_id(), Outcome()
        await self._reply_error(send, error, request_id, None, outcome)
        if self.access_log is not None:
            self.access_log.write(access_line(scope, request_id, arrived, time.perf_counter(), outcome, None, None))

    async def _reply_error(
        self, send: Send, error: ApiError, request_id: str, decision: PriorityDecision | None, outcome: Outcome,
    ) -> None:
        outcome.status, outcome.error = error.status, error.code or error.error_type
        body = error_body(self.endpoint, error)
        head = [_JSON, (b"content-length", str(len(body)).encode()), *triage_headers(request_id, decision)]
        head.extend(error.headers())
        await send({"type": "http.response.start", "status": error.status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    def _count_failure(self, priority: str, backend: str, reason: str, status: int | None,
                       ctx: RequestContext | None = None) -> None:
        self.metrics.child(self.metrics.errors, priority, backend, reason).inc()
        if status is not None:
            self.metrics.child(self.metrics.requests, self.endpoint, priority, backend, model_label(ctx), str(status)).inc()


def model_label(ctx: RequestContext | None) -> str:
    """The `model` label: the model a backend served, never a name only the client chose (an
    unknown model's name would add a series per typo)."""
    return (ctx.upstream_model if ctx is not None else "") or NO_BACKEND
