"""Reloading the config without a restart: on SIGHUP, and when its file changes if asked.

A reload changes the backends (added, removed, drained; their limits, priority map and models)
and the API keys (keys, priorities, rate limits). Requests in flight finish where they are: a
removed or draining backend takes no new request, and keeps the ones it has. Everything else
([server], [upstream], [routing], [admission], [priority], rules, tagging, [length], [[models]])
is read once at start; a reload that changes it says so in the log and leaves it as it was. A
config that does not load is refused with a log line, and the running one stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from triage_router.router.config import Config, ConfigError
from triage_router.router.config_loader import load_config
from triage_router.router.http.auth import ApiKeys
from triage_router.router.routing.backends import BackendPool
from triage_router.router.routing.dispatcher import Dispatcher
from triage_router.router.routing.health import HealthProber
from triage_router.router.routing.kv_events.feeds import KVEventFeeds
from triage_router.router.routing.models import ModelCatalog

log = logging.getLogger("triage.reload")

RELOADED = ("backends", "api_keys")
READ_AT_START = tuple(name for name in Config.__struct_fields__ if name not in RELOADED)


def reloaded(running: Config, new: Config) -> Config:
    """What a reload to `new` leaves running: its backends and keys, the rest as it was."""
    return msgspec.structs.replace(running, backends=new.backends, api_keys=new.api_keys)


class Reloader:
    def __init__(self, path: Path, running: Config, *, pool: BackendPool, dispatcher: Dispatcher, api_keys: ApiKeys,
                 catalog: ModelCatalog, prober: HealthProber, kv_feeds: KVEventFeeds,
                 load: Callable[[Path], Config] = load_config, poll_s: float = 2.0) -> None:
        self.path = path
        self.running = running
        self.pool = pool
        self.dispatcher = dispatcher
        self.api_keys = api_keys
        self.catalog = catalog
        self.prober = prober
        self.kv_feeds = kv_feeds
        self._load = load
        self.poll_s = poll_s
        self._watch: asyncio.Task[None] | None = None
        self._on_sighup = False
        self._pending: set[asyncio.Task[bool]] = set()

    async def reload(self) -> bool:
        """Read the file again and apply what can change; False (and a log line) if it does not load."""
        try:
            new = self._load(self.path)
        except (ConfigError, OSError) as error:
            log.error("config reload refused, the running config stays: %s", error)
            return False
        later = [f"[{name}]" for name in READ_AT_START if getattr(new, name) != getattr(self.running, name)]
        if later:
            log.warning("config reload: %s changed; that takes effect at the next start", ", ".join(later))
        added, removed = self.pool.reconfigure(new.backends)
        for backend in removed:
            self.prober.forget(backend)
            self.catalog.forget(backend)
        self.dispatcher.reconfigure(self.pool)
        self.kv_feeds.reconfigure(self.pool.backends)
        self.api_keys.reconfigure(new.api_keys)
        self.running = reloaded(self.running, new)
        draining = [b.name for b in self.pool.backends if b.config.drain]
        log.warning("config reloaded from %s: backends %s (added %s, removed %s, draining %s), %d API keys",
                    self.path, [b.name for b in self.pool.backends], [b.name for b in added],
                    [b.name for b in removed], draining, len(new.api_keys))
        if added:
            await self.catalog.refresh()  # route the new backends' models at once
        return True

    def start(self, watch: bool) -> None:
        """SIGHUP reloads (where this process may take signals); `watch` also polls the file."""
        loop = asyncio.get_running_loop()
        # Signals reach the main thread only: a server run in another thread (embedded, or in
        # tests) reloads by its file watch or by calling reload().
        self._on_sighup = threading.current_thread() is threading.main_thread()
        if self._on_sighup:
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        if watch:
            self._watch = loop.create_task(self._watch_file())

    async def stop(self) -> None:
        if self._on_sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        tasks = [task for task in (self._watch, *self._pending) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _watch_file(self) -> None:
        seen = _mtime(self.path)
        while True:
            await asyncio.sleep(self.poll_s)
            if (now := _mtime(self.path)) != seen:
                seen = now
                await self.reload()


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
