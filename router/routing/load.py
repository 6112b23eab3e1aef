"""Reading the backends' Prometheus /metrics (what a reading holds: router/routing/load_report.py).

Each backend is read at its own interval, which the dispatcher chooses (fast only where a
reading decides admission); the scraper wakes every `tick_s` and reads the backends that are due.
A reading older than `metrics_stale_s` counts as unknown: the router then falls back to its own
in-flight counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import httpx

from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.routing.load_report import parse_metrics

log = logging.getLogger("triage.load")


class MetricsScraper:
    """Reads each backend's /metrics when it is due, in one background task."""

    def __init__(
        self,
        pool: BackendPool,
        client: httpx.AsyncClient,
        interval_for: Callable[[Backend], float],
        tick_s: float,
        on_update: Callable[[], None],
        on_restart: Callable[[Backend], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.client = client
        self.interval_for = interval_for
        self.tick_s = tick_s
        self.on_update = on_update
        self.on_restart = on_restart
        self.clock = clock
        self._last_read: dict[str, float] = {}
        # Backends without /metrics (a plain OpenAI endpoint) are asked again only now and then.
        self._skip_until: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.pool.backends:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.scrape_due()
            await asyncio.sleep(self.tick_s)

    async def scrape_due(self) -> None:
        """Read every backend whose interval has passed since its last read (or attempt)."""
        now = self.clock()
        due = [b for b in self.pool.backends
               if now - self._last_read.get(b.name, -math.inf) >= self.interval_for(b)]
        if not due:
            return
        for backend in due:
            self._last_read[backend.name] = now
        await asyncio.gather(*(self.scrape(backend) for backend in due))
        self.on_update()

    async def scrape(self, backend: Backend) -> None:
        now = self.clock()
        if self._skip_until.get(backend.name, 0.0) > now:
            return
        try:
            response = await self.client.get(f"{backend.base_url}/metrics", timeout=max(self.tick_s * 5, 0.5))
        except httpx.HTTPError:
            return  # the last reading ages into "unknown"
        backend.answered = True
        if response.status_code == 404:
            self._skip_until[backend.name] = now + 30.0
            return
        if response.status_code != 200:
            return
        report = parse_metrics(response.text, self.clock())
        previous = backend.load_report
        # Counters only go down when the process restarted: its cache is empty now.
        if previous is not None and report.prefix_queries < previous.prefix_queries:
            log.warning("backend %s restarted (its counters went back); forgetting its prefixes", backend.name)
            self.on_restart(backend)
        backend.load_report = report
