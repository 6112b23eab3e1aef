"""create_app(config): the router as a litestar application."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import msgspec
from litestar import Litestar, Request, Response, asgi, get
from litestar.exceptions import HTTPException
from litestar.handlers import ASGIRouteHandler

from triage_router.router.http.access_log import AccessLog
from triage_router.router.http.auth import ApiKeys
from triage_router.router.http.openapi import openapi_json
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.config import Config
from triage_router.router.routing.dispatcher import Dispatcher
from triage_router.router.errors import MethodNotAllowed, for_status
from triage_router.router.routing.health import HealthProber
from triage_router.router.routing.kv_events.feeds import KVEventFeeds
from triage_router.router.prediction.length import LengthPredictor
from triage_router.router.routing.load import MetricsScraper
from triage_router.router.metrics import RouterMetrics
from triage_router.router.routing.models import ModelCatalog, ModelList, ModelRoutes, configured_models
from triage_router.router.tagging.priority import build_resolver
from triage_router.router.http.asgi_io import Receive, Send
from triage_router.router.http.explain import EXPLAIN_PREFIX, ExplainEndpoint
from triage_router.router.http.proxy import ProxyEndpoint
from triage_router.router.http.reload import Reloader
from triage_router.router.http.status import status_routes
from triage_router.router.routing.upstream import UpstreamClient

# httpx logs every request at INFO; on the hot path that costs more than the request.
logging.getLogger("httpx").setLevel(logging.WARNING)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Paths outside /v1/ that vLLM serves and that are routed by their body's model.
TOP_LEVEL_RELAYS = ("/tokenize", "/detokenize")


class TriageApp:
    """The ASGI application: POSTs to the relay paths go straight to their handlers, and any
    other POST under /v1/ to the passthrough relay, except to a path of litestar's own (a 405
    there, not a backend's answer); litestar serves everything else (and the relay paths too,
    for spellings like a trailing slash).

    Paths under /triage/explain/ answer what a relay would decide (router/http/explain.py).

    Skipping litestar's middleware stack and router on the hot path measurably cuts the
    proxy's per-request cost; nothing there is used by the relay.
    """

    def __init__(self, litestar: Litestar, relays: dict[str, ProxyEndpoint], passthrough: ProxyEndpoint) -> None:
        self.litestar = litestar
        self.relays = relays
        self.passthrough = passthrough
        self.explain = ExplainEndpoint(relays)
        self.litestar_paths = frozenset(route.path for route in litestar.routes)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            relay = self.relays.get(path)
            if relay is None and path.startswith("/v1/") and not path.endswith("/") and path not in self.litestar_paths:
                relay = self.passthrough
            if relay is not None:
                await relay(scope, receive, send)
                return
        if scope["type"] == "http" and scope["path"].startswith(EXPLAIN_PREFIX):
            await self.explain(scope, receive, send)
            return
        await self.litestar(scope, receive, send)


def _relay_route(path: str, endpoint: ProxyEndpoint) -> ASGIRouteHandler:
    async def relay(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            await endpoint(scope, receive, send)
        else:
            await endpoint.reject(scope, send, MethodNotAllowed(f"use POST for {path}", allow="POST"))

    relay.__name__ = f"relay_{path.strip('/').replace('/', '_')}"
    # An ASGI route takes every method; the handler itself answers 405 for anything but POST.
    return asgi(path, is_mount=False, copy_scope=False)(relay)


def _openai_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown path, wrong method) in OpenAI's shape too, with their
    headers (a 405's `Allow`)."""
    api_error = for_status(error.status_code, str(error.detail))
    return Response(api_error.body(), status_code=api_error.status, media_type="application/json",
                    headers=error.headers)


def create_app(config: Config, config_path: Path | None = None, *, worker_index: int = 0, workers: int = 1) -> TriageApp:
    """The router for `config`; given the file it came from, SIGHUP (and, if configured, a
    change to the file) reloads its backends and keys (router/http/reload.py).

    As worker `worker_index` of `workers` (`triage serve --workers`, router/cli/workers.py): its
    metrics are rendered with every worker's, its local rate-limit buckets hold its share of
    each limit, and only worker 0 writes the length predictor's state file (all read it)."""
    metrics = RouterMetrics(across_processes=workers > 1)
    pool = BackendPool(config.backends, config.routing.block_chars, config.routing.index_capacity_factor)
    upstream = UpstreamClient(config.upstream)
    control = httpx.AsyncClient()
    prober = HealthProber(pool, control, config.upstream)
    dispatcher = Dispatcher(config, pool, metrics)
    kv_feeds = KVEventFeeds(config.routing, metrics)
    scraper = MetricsScraper(
        pool, control, dispatcher.metrics_interval, config.routing.metrics_fast_interval_s,
        on_update=dispatcher.on_load_update,
        on_restart=Backend.restarted,
        # One clock for readings and for judging their age.
        clock=dispatcher.clock,
    )
    routes = ModelRoutes(config.models)
    catalog = ModelCatalog(pool, control, config.upstream.models_refresh_s, config.upstream.connect_timeout_s,
                           aliases=routes.names())
    # Tagging has its own client: a slow tagger must not hold the control plane's connections.
    tagging_http = httpx.AsyncClient(timeout=30.0)
    resolver, classifiers = build_resolver(config, metrics, tagging_http)
    predictor = LengthPredictor(config.length)
    access_log = AccessLog(config.log) if config.log.access else None
    background: list[asyncio.Task[None]] = []
    # Each worker is one more replica holding a share of every limit in its local buckets.
    rate_limits = msgspec.structs.replace(config.rate_limits, replicas=config.rate_limits.replicas * workers)
    api_keys = ApiKeys(config.api_keys, metrics=metrics, rate_limits=rate_limits)
    saves_length_state = bool(config.length.state_file) and worker_index == 0
    reloader = None if config_path is None else Reloader(
        config_path, config, pool=pool, dispatcher=dispatcher, api_keys=api_keys, catalog=catalog, prober=prober,
        kv_feeds=kv_feeds)
    shared = dict(config=config, pool=pool, upstream=upstream, resolver=resolver, api_keys=api_keys, metrics=metrics,
                  dispatcher=dispatcher, predictor=predictor, access_log=access_log, kv_feeds=kv_feeds)
    relays = {
        "/v1/chat/completions": ProxyEndpoint("chat", **shared),
        "/v1/completions": ProxyEndpoint("completions", **shared),
        "/v1/embeddings": ProxyEndpoint("embeddings", **shared),
        "/v1/responses": ProxyEndpoint("responses", **shared),
        "/v1/messages": ProxyEndpoint("messages", **shared),
    }
    passthrough = ProxyEndpoint("passthrough", **shared)
    relays.update({path: passthrough for path in TOP_LEVEL_RELAYS})

    @get("/v1/models")
    async def list_models() -> ModelList:
        return catalog.list_models()

    @get("/health")
    async def health() -> dict[str, Any]:
        backends = {backend.name: "up" if backend.healthy else "down" for backend in pool.backends}
        answer: dict[str, Any] = {"status": "ok" if all(state == "up" for state in backends.values()) else "degraded",
                                   "backends": backends}
        if classifiers:
            # A tagger still embedding its examples lets requests through to the next step.
            answer["tagging"] = {c.name: "ready" if c.ready else "starting" for c in classifiers}
        return answer

    @get("/ready")
    async def ready() -> Response[Any]:
        """Readiness, for a load balancer or a Kubernetes probe: 200 only while a healthy backend
        that has answered since start serves every configured model (and at least one does);
        else 503 with why. /health stays liveness: the process answers."""
        missing = [name for name in configured_models(config)
                   if not any(b.healthy and b.answered for model in routes.chain(name) for b in pool.serving(model))]
        if not any(b.healthy and b.answered for b in pool.backends):
            missing.append("(any model: no backend is healthy and answering)")
        if missing:
            return Response({"status": "not ready", "no_healthy_backend_for": missing}, status_code=503)
        return Response({"status": "ready"}, status_code=200)

    @get("/metrics")
    async def prometheus() -> Response[bytes]:
        for backend in pool.backends:
            metrics.backend_up.labels(backend.name).set(1 if backend.healthy else 0)
        kv_feeds.export(pool.backends)
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    @get("/openapi.json")
    async def openapi() -> Response[bytes]:
        return Response(document, media_type="application/json")

    pages = [list_models, health, ready, prometheus, openapi, *status_routes(pool, dispatcher, worker_index, workers)]
    # Built once, before the app serves: the routes above and the relays, as mounted.
    document = openapi_json(config, relays, [path for page in pages for path in page.paths],
                            [EXPLAIN_PREFIX + path for path, relay in relays.items() if relay.generates])

    async def startup() -> None:
        await catalog.start()
        scraper.start()
        kv_feeds.attach(pool.backends)
        if reloader is not None:
            reloader.start(watch=config.server.watch_config)
        for classifier in classifiers:
            await classifier.start()
        if saves_length_state:
            background.append(asyncio.ensure_future(predictor.save_periodically()))
        if metrics.across_processes:
            background.append(asyncio.ensure_future(metrics.flush_periodically()))

    async def shutdown() -> None:
        if reloader is not None:
            await reloader.stop()
        await catalog.stop()
        await scraper.stop()
        await kv_feeds.stop()
        for classifier in classifiers:
            await classifier.close()
        await tagging_http.aclose()
        for task in background:
            task.cancel()
        if saves_length_state:
            predictor.save(config.length.state_file)
        await prober.close()
        await api_keys.close()
        await upstream.close()
        await control.aclose()
        if access_log is not None:
            access_log.close()
        metrics.flush()  # a worker's last counts, into its file before it exits

    app = Litestar(
        route_handlers=[
            *(_relay_route(path, endpoint) for path, endpoint in relays.items()),
            *pages,
        ],
        exception_handlers={HTTPException: _openai_error},
        on_startup=[startup],
        on_shutdown=[shutdown],
        # Litestar's own schema (at /schema) would miss the relay routes, which are raw ASGI
        # handlers: router/http/openapi.py describes every route at /openapi.json instead.
        openapi_config=None,
    )
    return TriageApp(app, relays, passthrough)
