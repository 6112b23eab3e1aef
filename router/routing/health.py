"""Health probing: a backend marked down is probed with exponential backoff until it answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from triage_router.router.routing.backends import Backend, BackendPool
from triage_router.router.config import UpstreamConfig

log = logging.getLogger("triage.health")


class HealthProber:
    def __init__(
        self,
        pool: BackendPool,
        client: httpx.AsyncClient,
        config: UpstreamConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.client = client
        self.config = config
        self._sleep = sleep
        self._probes: dict[str, asyncio.Task[None]] = {}
        pool.on_down = self.watch

    def watch(self, backend: Backend) -> None:
        """Start probing a backend that was just marked down (idempotent)."""
        log.warning("backend %s marked down after %d consecutive failures", backend.name, backend.consecutive_failures)
        if backend.name not in self._probes:
            self._probes[backend.name] = asyncio.get_running_loop().create_task(self._probe_until_up(backend))

    async def probe_once(self, backend: Backend) -> bool:
        try:
            response = await self.client.get(
                backend.base_url + self.config.probe_path,
                headers={"authorization": f"Bearer {backend.config.api_key}"} if backend.config.api_key else None,
                timeout=self.config.connect_timeout_s,
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def _probe_until_up(self, backend: Backend) -> None:
        interval = self.config.probe_initial_interval_s
        try:
            while not await self.probe_once(backend):
                await self._sleep(interval)
                interval = min(interval * 2, self.config.probe_max_interval_s)
            self.pool.mark_up(backend)
            log.warning("backend %s is back up", backend.name)
        finally:
            self._probes.pop(backend.name, None)

    def forget(self, backend: Backend) -> None:
        """A backend a reload removed: stop probing it."""
        task = self._probes.pop(backend.name, None)
        if task is not None:
            task.cancel()

    async def wait_until_up(self, name: str) -> None:
        """Wait for a running probe to finish (nothing to wait for if the backend is not down)."""
        task = self._probes.get(name)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        for task in list(self._probes.values()):
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
