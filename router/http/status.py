"""`GET /status` and `GET /dashboard`: what the router holds now, as JSON and as a page that
polls it.

Everything is gathered when the endpoint is read: the queue's and the backends' own counters,
and the dispatcher's last decisions, formatted here rather than when they were made.
docs/metrics.md says what each field means.
"""

from __future__ import annotations

import os
import time
from importlib.resources import files
from typing import Any

from litestar import MediaType, Response, get
from litestar.handlers import HTTPRouteHandler

from triage_router.policies.request import PRIORITY_LEVELS
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.routing.decisions import Placed, Refused
from triage_router.router.routing.dispatcher import Dispatcher, explain

# Read once: the page is static, its JavaScript fetches /status.
DASHBOARD_HTML = files(__package__).joinpath("dashboard.html").read_bytes()
# Polled every second or two: a cached copy would show a past state.
_NO_STORE = {"cache-control": "no-store"}


def _rounded(seconds: float) -> float:
    """To the millisecond: finer is noise on a page."""
    return round(seconds, 3)


def backend_status(backend: Backend, now: float) -> dict[str, Any]:
    report = backend.load_report
    # A /metrics without vLLM's gauges (some other server's) says nothing about its load.
    load = report if report is not None and report.reports_load else None
    hit_rate: float | str = "unknown"
    if report is not None and report.prefix_queries > 0:
        hit_rate = round(report.prefix_hits / report.prefix_queries, 4)
    limits = backend.limits
    return {
        "name": backend.name,
        "healthy": backend.healthy,
        "answered": backend.answered,
        "running": load.running if load else None,
        "waiting": load.waiting if load else None,
        "kv_usage": load.kv_usage if load else None,
        "prefix_hit_rate": hit_rate,
        "reading_age_s": _rounded(now - report.read_at) if report is not None else None,
        "in_flight": backend.in_flight,
        "in_flight_by_priority": list(backend.in_flight_by_priority),
        "concurrency": {
            "learned": backend.concurrency.limit,
            "slow_start_probe": backend.concurrency.probe,
            # Explicit limits replace the learned concurrency (policies/saturation.py).
            "configured_limits": {name: value for name, value in (
                ("max_load", limits.max_load), ("max_waiting", limits.max_waiting),
                ("max_kv_usage", limits.max_kv_usage), ("max_in_flight_tokens", limits.max_in_flight_tokens),
            ) if value},
        },
    }


def decision_status(entry: Placed | Refused, now: float, wall_now: float) -> dict[str, Any]:
    common = {
        "at": round(wall_now - (now - entry.at), 3),
        "request_id": entry.request_id,
        "model": entry.model,
        "priority": entry.priority,
        "priority_source": entry.priority_source,
    }
    if isinstance(entry, Placed):
        return {"outcome": "placed", **common, "backend": entry.backend,
                "reason": explain(entry.placement, entry.saturated),
                "queue_wait_s": _rounded(entry.queue_wait_s), "retry": entry.retry}
    return {"outcome": "refused", **common, "status": entry.status, "code": entry.code, "reason": entry.message}


def status_of(pool: BackendPool, dispatcher: Dispatcher, worker_index: int = 0, workers: int = 1) -> dict[str, Any]:
    now, wall_now = dispatcher.clock(), time.time()
    return {
        "at": round(wall_now, 3),
        # With `triage serve --workers`, everything below is this worker's own.
        "worker": {"index": worker_index, "of": workers, "pid": os.getpid()},
        "priorities": [
            {"priority": p, "waiting": dispatcher.queue.waiting(p),
             "in_flight": sum(b.in_flight_by_priority[p] for b in pool.backends)}
            for p in range(PRIORITY_LEVELS)
        ],
        "backends": [backend_status(backend, now) for backend in pool.backends],
        "decisions": [decision_status(entry, now, wall_now) for entry in dispatcher.recent.newest_first()],
    }


def status_routes(pool: BackendPool, dispatcher: Dispatcher, worker_index: int = 0,
                  workers: int = 1) -> list[HTTPRouteHandler]:
    @get("/status")
    async def status() -> Response[dict[str, Any]]:
        return Response(status_of(pool, dispatcher, worker_index, workers), headers=_NO_STORE)

    @get("/dashboard")
    async def dashboard() -> Response[bytes]:
        return Response(DASHBOARD_HTML, media_type=MediaType.HTML, headers=_NO_STORE)

    return [status, dashboard]
