"""Dispatcher: gives each request a backend, now or after waiting in the admission queue.

For a request it builds a `triage_router.policies.placement.BackendState` per candidate from what the router
knows (its own in-flight counts, the backend's fresh /metrics, the prefix index's match), sets
aside the saturated ones, and asks the configured placer. A slot is taken the moment a backend
is chosen and given back when the answer is complete, which is when waiting requests move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from triage_router.policies.placement import (
    BackendState,
    CacheAffinity,
    LeastLoad,
    Placement,
    PlacementRequest,
    Placer,
    PowerOfTwoChoices,
    RoundRobin,
    session_placement,
)
from triage_router.policies.prefix_homes import PrefixHomes
from triage_router.policies.saturation import BackendLoad, saturation
from triage_router.router.routing.admission import AdmissionQueue, Job
from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.routing.decisions import RecentDecisions
from triage_router.router.config import Config, RoutingConfig
from triage_router.router.errors import ApiError, NoHealthyBackend
from triage_router.router.routing.fingerprint import CHARS_PER_TOKEN
from triage_router.router.routing.load_report import LoadReport
from triage_router.router.metrics import RouterMetrics

log = logging.getLogger("triage.dispatch")


@dataclass(slots=True)  # not frozen: built per request and candidate (policies/placement.py says why)
class CacheView:
    matched_tokens: int
    share: float  # of the prompt
    prefixes: int  # distinct prompt roots cached
    tokens: int  # tokens cached
    source: str  # "kv_events" or "approximate"
    # By the events it no longer holds the prompt, but this router sent it there lately: a home.
    sent_here: bool = False


def make_placer(routing: RoutingConfig) -> Placer:
    if routing.policy == "cache-affinity":
        return CacheAffinity(routing.balance_abs_threshold, routing.balance_rel_threshold, routing.cache_threshold,
                             routing.overflow_imbalance)
    if routing.policy == "least-load":
        return LeastLoad()
    if routing.policy == "power-of-two":
        return PowerOfTwoChoices()
    return RoundRobin()


def explain(placement: Placement, saturated: dict[str, str]) -> str:
    """One line: policy, reason, then every candidate's score or why it was not eligible."""
    parts = [f"{c.backend}={c.score:.4g}" if c.eligible else f"{c.backend}=({c.reason})" for c in placement.candidates]
    parts.extend(f"{name}=(saturated: {why})" for name, why in sorted(saturated.items()))
    return f"{placement.policy}: {placement.reason}; " + ", ".join(parts)


class Dispatcher:
    def __init__(
        self, config: Config, pool: BackendPool, metrics: RouterMetrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.routing = config.routing
        self.headroom = config.admission.headroom
        self.metrics = metrics
        self.clock = clock
        self.placer = make_placer(config.routing)
        self.queue = AdmissionQueue(config.admission, metrics, clock)
        self.backends = {backend.name: backend for backend in pool.backends}
        self.homes = PrefixHomes()
        pool.on_up = lambda backend: self.pump()
        # Why each job in flight went where it went; formatted only when asked for.
        self._decisions: dict[str, tuple[Placement, dict[str, str]]] = {}
        # The last placements and refusals, in flight or not, for /status.
        self.recent = RecentDecisions()

    async def acquire(self, job: Job) -> Backend:
        """A backend with a slot taken for `job`; waits in the queue if every candidate is full."""
        if not any(backend.accepting for name in job.candidates - job.exclude
                   if (backend := self.backends.get(name)) is not None):
            refusal = NoHealthyBackend("no healthy backend serves this model; try again shortly")
            if not job.exclude:  # a retry with nowhere left to go answers with the last failure instead
                self.recent.refused(self.clock(), job, refusal)
            raise refusal
        backend = self._try_place(job)
        if backend is None:
            try:
                backend = await self.queue.wait(job)
            except asyncio.CancelledError:
                placed = job.placed
                if placed is not None and placed.done() and not placed.cancelled() and placed.exception() is None:
                    self.release(placed.result(), job)
                raise
            except ApiError as refusal:  # the queue was full, shed it, or timed out
                self.recent.refused(self.clock(), job, refusal)
                raise
        if not job.exclude:  # a retry's second placement is not queueing
            self.metrics.child(self.metrics.queue_time, str(job.priority), job.model).observe(self.clock() - job.arrival)
        return backend

    def reconfigure(self, pool: BackendPool) -> None:
        """The pool's backends after a reload. Requests in flight keep the backend they hold;
        waiting ones go only to backends still there."""
        self.backends = {backend.name: backend for backend in pool.backends}
        self.pump()

    def release(self, backend: Backend, job: Job) -> None:
        fresh = backend.fresh_report(self.clock(), self.routing.metrics_stale_s) is not None
        backend.concurrency.observe_completion(backend.in_flight, fresh)
        backend.in_flight -= 1
        backend.in_flight_tokens -= job.tokens
        backend.in_flight_by_priority[job.priority] -= 1
        backend.releases += 1
        self._decisions.pop(job.request_id, None)
        self.pump()

    def explanation(self, request_id: str) -> str:
        """Why an in-flight request went where it went (for the debug header)."""
        decision = self._decisions.get(request_id)
        return explain(*decision) if decision is not None else ""

    def pump(self) -> None:
        """Let waiting requests go wherever there is room now."""
        if self.queue:
            self.queue.pump(self._try_place)

    def on_load_update(self) -> None:
        for backend in self.backends.values():
            report = backend.load_report
            if report is None:
                continue
            if report.read_at != backend.reading_seen_at:  # each reading is learned from once
                backend.reading_seen_at = report.read_at
                backend.releases_at_reading = backend.releases
                if report.reports_load:
                    backend.concurrency.observe_reading(report.running, report.waiting, report.read_at)
            if report.kv_capacity_tokens:
                backend.reported_capacity(report.kv_capacity_tokens)
            self._export(backend, report)
        self.pump()

    def _export(self, backend: Backend, report: LoadReport) -> None:
        """The backend's own reading, and what we learned from it, for a dashboard."""
        m, name = self.metrics, backend.name
        for gauge, value in ((m.backend_running, report.running), (m.backend_waiting, report.waiting),
                             (m.backend_kv_usage, report.kv_usage), (m.backend_prefix_queries, report.prefix_queries),
                             (m.backend_prefix_hits, report.prefix_hits),
                             (m.backend_concurrency, backend.concurrency.limit or 0)):
            m.child(gauge, name).set(value)

    def on_output(self, tenant: str, predicted_output_tokens: int, completion_tokens: int) -> None:
        """An answer reported its length: correct the fair-share charge made on the prediction."""
        if self.queue.fair_share is not None:
            self.queue.fair_share.charge(tenant, output_tokens=completion_tokens - predicted_output_tokens)

    def on_refusal(self, backend: Backend) -> None:
        """The backend answered 429 to one of ours: it runs no more than it already had."""
        backend.concurrency.observe_refusal(backend.in_flight - 1)

    def metrics_interval(self, backend: Backend) -> float:
        """How often to read `backend`'s /metrics: fast while a reading can hold a request back
        or let one go (a limit reads it and this router has requests on it or waiting), else
        slow, since each read costs the backend CPU and our own counts are current."""
        if backend.limits.read_metrics and (backend.in_flight or self.queue):
            return self.routing.metrics_fast_interval_s
        return self.routing.metrics_interval_s

    @staticmethod
    def _load(backend: Backend, report: LoadReport | None, priority: int) -> BackendLoad:
        ahead = backend.in_flight_at_least_as_urgent_as(priority) if backend.orders_by_priority else None
        if report is None:
            return BackendLoad(backend.in_flight, backend.in_flight_tokens, in_flight_ahead=ahead)
        return BackendLoad(backend.in_flight, backend.in_flight_tokens, report.running, report.waiting,
                           report.kv_usage, backend.releases - backend.releases_at_reading, ahead)

    def preview(self, job: Job) -> tuple[Placement, dict[str, str], dict[str, CacheView]]:
        """Where `job` would go now, and why, taking no slot (`triage explain`)."""
        return self._choose(job, self.clock())

    def _try_place(self, job: Job) -> Backend | None:
        """Choose a backend with room and take a slot on it; None if every candidate is full."""
        now = self.clock()
        placement, saturated, caches = self._choose(job, now)
        if placement.backend is None:
            return None
        blocks = job.fingerprint.block_hashes
        backend = self.backends[placement.backend]
        job.placed_at = now
        backend.in_flight += 1
        backend.in_flight_tokens += job.tokens
        backend.in_flight_by_priority[job.priority] += 1
        if self.queue.fair_share is not None:
            # Charged on the prediction now, corrected when the answer reports its real length.
            self.queue.fair_share.charge(job.tenant, job.prompt_tokens, job.predicted_output_tokens)
        backend.prefix_index.insert(blocks)
        if blocks:
            share = caches[backend.name].share if backend.name in caches else 0.0
            self.homes.placed(blocks[0], backend.name, share, self.routing.cache_threshold)
        self.metrics.child(self.metrics.placements, placement.policy, backend.name).inc()
        self._decisions[job.request_id] = (placement, saturated)
        self.recent.placed(now, job, backend.name, placement, saturated)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request %s -> %s (%s)", job.request_id, backend.name, explain(placement, saturated))
        return backend

    def _choose(self, job: Job, now: float) -> tuple[Placement, dict[str, str], dict[str, CacheView]]:
        """The placement among the candidates with room, the saturated ones and why, and what
        each candidate holds of the prompt. Changes nothing."""
        states: list[BackendState] = []
        saturated: dict[str, str] = {}
        blocks = job.fingerprint.block_hashes
        home = self.homes.home(blocks[0]) if blocks else None
        caches: dict[str, CacheView] = {}
        for name in sorted(job.candidates - job.exclude):
            if (backend := self.backends.get(name)) is None:
                continue  # removed by a reload while the request waited
            if backend.config.drain:
                saturated[name] = "draining"
                continue
            report = backend.fresh_report(now, self.routing.metrics_stale_s)
            load = self._load(backend, report, job.priority)
            if backend.healthy:
                reason = saturation(backend.limits, load, backend.concurrency.cap, self.headroom[job.priority],
                                    job.tokens, slow_start=backend.concurrency.slow_starting)
                if reason is not None:
                    saturated[name] = f"{reason} for priority {job.priority}"
                    continue
            cache = caches[name] = self._cache_view(backend, job)
            states.append(BackendState(
                name,
                load=load.load,
                in_flight_tokens=backend.in_flight_tokens,
                prefix_match_tokens=cache.matched_tokens,
                cached_prefixes=cache.prefixes,
                cached_tokens=cache.tokens,
                kv_capacity_tokens=backend.kv_capacity_tokens,
                home=name == home or cache.sent_here,
                kv_usage=load.kv_usage or 0.0,
                healthy=backend.healthy,
            ))
        placement = session_placement(job.session, states) if job.session else None
        if placement is None:
            request = PlacementRequest(job.request_id, job.priority, job.prompt_tokens, job.predicted_output_tokens)
            placement = self.placer.place(request, states, now)
        return placement, saturated, caches

    def _cache_view(self, backend: Backend, job: Job) -> CacheView:
        """What `backend` holds of the prompt, and how full its cache is: from its KV events
        when it sends them and they can be trusted, else from the approximate index of what this
        router sent there."""
        feed = backend.kv_feed
        tokens = job.tokenized.get(backend.config.tokenizer) if feed is not None else None
        blocks = job.fingerprint.block_hashes
        sent = backend.prefix_index.match(blocks)
        if feed is not None and tokens is not None and feed.trusted:
            size = feed.index.block_size  # 0 until the first store: then it holds nothing
            matched = feed.index.match(tokens.block_hashes(size, self.routing.max_blocks)) * size if size else 0
            # Under a cache too small for the tenants, their prompts are evicted between turns, and
            # exact state alone would move them each time; where this router sent them last is
            # where their next turn belongs (CacheAffinity's rule 3, PrefixHomes' purpose).
            return CacheView(matched, matched / max(1, len(tokens)), feed.index.roots, feed.index.cached_tokens,
                             "kv_events", sent / max(1, len(blocks)) > self.routing.cache_threshold)
        return CacheView(sent * self.routing.block_chars // CHARS_PER_TOKEN, sent / max(1, len(blocks)),
                         backend.prefix_index.roots, backend.cached_tokens, "approximate")
