"""Backends: the upstream servers Triage routes to, with the state the router keeps on each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from triage_router.policies.request import PRIORITY_LEVELS
from triage_router.policies.saturation import ConcurrencyEstimate, SaturationLimits
from triage_router.router.config import BackendConfig
from triage_router.router.routing.fingerprint import CHARS_PER_TOKEN
from triage_router.router.routing.load_report import LoadReport
from triage_router.router.routing.prefix_index import PrefixIndex

if TYPE_CHECKING:
    from triage_router.router.routing.kv_events.subscriber import KVEventSubscriber

# Assumed KV capacity when neither the config nor the backend's /metrics gives one.
DEFAULT_KV_CAPACITY_TOKENS = 65536


class Backend:
    """One upstream and what this router process knows of it."""

    __slots__ = ("config", "name", "base_url", "limits", "concurrency", "in_flight", "in_flight_tokens",
                 "in_flight_by_priority", "releases", "releases_at_reading", "reading_seen_at",
                 "consecutive_failures", "healthy", "answered", "load_report", "kv_capacity_tokens", "prefix_index", "listed_models",
                 "kv_feed", "_block_chars", "_index_capacity_factor")

    def __init__(self, config: BackendConfig, block_chars: int, index_capacity_factor: float = 2.0) -> None:
        self.config = config
        self.name = config.name
        self.base_url = config.url
        self.limits = _limits_of(config)
        # With no explicit limits, how many requests it runs at once, as learned from its
        # /metrics and its 429s (triage_router.policies.saturation).
        self.concurrency = ConcurrencyEstimate()
        # Requests this router has sent there and not yet finished, and their tokens
        # (prompt + predicted output).
        self.in_flight = 0
        self.in_flight_tokens = 0
        self.in_flight_by_priority = [0] * PRIORITY_LEVELS
        # Requests of ours that ended, ever and when the current reading arrived: their
        # difference is what the reading still counts that is gone.
        self.releases = 0
        self.releases_at_reading = 0
        self.reading_seen_at = -1.0
        self.consecutive_failures = 0
        # Healthy until requests fail (a passive check); answered once it has answered anything
        # at all (a model listing, a /metrics read, a request, a probe), which readiness needs:
        # a backend still loading its model is "healthy" but has never answered.
        self.healthy = True
        self.answered = False
        # The backend's own /metrics reading, when it has one.
        self.load_report: LoadReport | None = None
        # Configured, else reported by the backend; None until either is known.
        self.kv_capacity_tokens = config.kv_capacity_tokens
        self._block_chars = block_chars
        self._index_capacity_factor = index_capacity_factor
        self.prefix_index = PrefixIndex(self._index_blocks(config.kv_capacity_tokens or DEFAULT_KV_CAPACITY_TOKENS))
        # What its own /v1/models last listed (router/routing/models.py reads it).
        self.listed_models: frozenset[str] = frozenset()
        # Its KV-event stream and the block index built from it, when it names a publisher
        # (router/routing/kv_events/feeds.py attaches it).
        self.kv_feed: KVEventSubscriber | None = None

    def serves(self, model: str) -> bool:
        return model in self.listed_models or self.config.serves(model)

    @property
    def accepting(self) -> bool:
        """Whether new requests may go there: healthy and not draining."""
        return self.healthy and not self.config.drain

    def reconfigure(self, config: BackendConfig) -> None:
        """The same backend (name and URL) under a reloaded config: its limits, priority map,
        models and drain change; what was learned of it (concurrency, cache, health) stays."""
        self.config = config
        self.limits = _limits_of(config)
        if config.kv_capacity_tokens is not None and config.kv_capacity_tokens != self.kv_capacity_tokens:
            self.kv_capacity_tokens = config.kv_capacity_tokens
            self.prefix_index.resize(self._index_blocks(config.kv_capacity_tokens))

    def _index_blocks(self, kv_capacity_tokens: int) -> int:
        return int(kv_capacity_tokens * CHARS_PER_TOKEN * self._index_capacity_factor) // self._block_chars

    def reported_capacity(self, kv_capacity_tokens: int) -> None:
        """The backend told us its KV capacity; a configured capacity still wins."""
        if self.config.kv_capacity_tokens is None:
            self.kv_capacity_tokens = kv_capacity_tokens
            self.prefix_index.resize(self._index_blocks(kv_capacity_tokens))

    @property
    def cached_tokens(self) -> int:
        """Distinct prompt tokens recently sent here (the prefix index's blocks): an estimate
        of the working set its cache is asked to hold, which can exceed its capacity."""
        return len(self.prefix_index) * self._block_chars // CHARS_PER_TOKEN

    @property
    def orders_by_priority(self) -> bool:
        """The backend's own queue runs by the `priority` field we send it."""
        return self.config.scheduling == "priority"

    def in_flight_at_least_as_urgent_as(self, priority: int) -> int:
        return sum(self.in_flight_by_priority[: priority + 1])

    def fresh_report(self, now: float, stale_s: float) -> LoadReport | None:
        report = self.load_report
        if report is None or now - report.read_at > stale_s:
            return None
        return report

    def restarted(self) -> None:
        """Its counters went backwards: a new process, with an empty cache. The event index is
        cleared too, in case the new process has published nothing yet to say so."""
        self.prefix_index.clear()
        if self.kv_feed is not None:
            self.kv_feed.backend_restarted()

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.answered = True

    def record_failure(self, threshold: int) -> bool:
        """Count a failure; return True when this one marks the backend down."""
        self.consecutive_failures += 1
        if self.healthy and self.consecutive_failures >= threshold:
            self.healthy = False
            return True
        return False

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, healthy={self.healthy}, in_flight={self.in_flight})"


def _limits_of(config: BackendConfig) -> SaturationLimits:
    return SaturationLimits(config.max_load, config.max_waiting, config.max_kv_usage, config.max_in_flight_tokens)


class BackendPool:
    """All configured backends, looked up by the model they serve."""

    def __init__(self, configs: list[BackendConfig], block_chars: int = 256, index_capacity_factor: float = 2.0) -> None:
        self._block_chars = block_chars
        self._index_capacity_factor = index_capacity_factor
        self.backends = [Backend(config, block_chars, index_capacity_factor) for config in configs]
        self._by_model: dict[str, list[Backend]] = {}
        # Called with a backend the moment it is marked down (the health prober listens).
        self.on_down: Callable[[Backend], None] = lambda backend: None
        # Called when a backend is taken as healthy again (queued requests may now go there).
        self.on_up: Callable[[Backend], None] = lambda backend: None

    def serving(self, model: str) -> list[Backend]:
        """Backends that list or are configured for a model, healthy or not."""
        found = self._by_model.get(model)
        if found is None:
            found = [backend for backend in self.backends if backend.serves(model)]
            # Bounded: clients choose model names, so do not cache unknown ones forever.
            if found or len(self._by_model) < 4096:
                self._by_model[model] = found
        return found

    def reconfigure(self, configs: list[BackendConfig]) -> tuple[list[Backend], list[Backend]]:
        """A reloaded backend list; returns the backends added and those removed. A backend whose
        name and URL are unchanged keeps its state. A removed one leaves the pool at once: no new
        request goes there, and those in flight finish on the object they hold."""
        current = {backend.name: backend for backend in self.backends}
        kept: list[Backend] = []
        added: list[Backend] = []
        removed: list[Backend] = []
        for config in configs:
            old = current.pop(config.name, None)
            if old is not None and old.base_url == config.url:
                old.reconfigure(config)
                kept.append(old)
                continue
            if old is not None:
                removed.append(old)
            new = Backend(config, self._block_chars, self._index_capacity_factor)
            kept.append(new)
            added.append(new)
        removed.extend(current.values())
        self.backends = kept
        self._by_model.clear()
        return added, removed

    def set_listed_models(self, backend: Backend, models: frozenset[str]) -> None:
        if models != backend.listed_models:
            backend.listed_models = models
            self._by_model.clear()

    def mark_failure(self, backend: Backend, threshold: int) -> None:
        if backend.record_failure(threshold):
            self.on_down(backend)

    def mark_up(self, backend: Backend) -> None:
        backend.consecutive_failures = 0
        backend.healthy = True
        backend.answered = True
        # A backend that was down may have restarted: whatever we thought it cached is gone.
        backend.prefix_index.clear()
        self.on_up(backend)
