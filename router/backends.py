"""Backends: the upstream servers Triage routes to, with the state the router keeps on each."""

from __future__ import annotations

from collections.abc import Callable

from router.config import BackendConfig


class Backend:
    """One upstream and what this router process knows of it."""

    __slots__ = ("config", "name", "base_url", "in_flight", "consecutive_failures", "healthy")

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = config.url
        self.in_flight = 0
        self.consecutive_failures = 0
        self.healthy = True

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, threshold: int) -> bool:
        """Count a failure; return True when this one marks the backend down."""
        self.consecutive_failures += 1
        if self.healthy and self.consecutive_failures >= threshold:
            self.healthy = False
            return True
        return False

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, healthy={self.healthy}, in_flight={self.in_flight})"


class BackendPool:
    """All configured backends, looked up by the model they serve."""

    def __init__(self, configs: list[BackendConfig]) -> None:
        self.backends = [Backend(config) for config in configs]
        self._by_model: dict[str, list[Backend]] = {}
        self._turn = 0
        # Called with a backend the moment it is marked down (the health prober listens).
        self.on_down: Callable[[Backend], None] = lambda backend: None

    def serving(self, model: str) -> list[Backend]:
        """Backends configured for a model, healthy or not."""
        found = self._by_model.get(model)
        if found is None:
            found = [backend for backend in self.backends if backend.config.serves(model)]
            # Bounded: clients choose model names, so do not cache unknown ones forever.
            if found or len(self._by_model) < 4096:
                self._by_model[model] = found
        return found

    def pick(self, candidates: list[Backend], exclude: set[str]) -> Backend | None:
        """The healthy candidate with the fewest requests in flight; round-robin breaks ties.

        Cache-affinity placement from policies/ replaces this in the routing issue.
        """
        best: Backend | None = None
        count = len(candidates)
        self._turn += 1
        for offset in range(count):
            backend = candidates[(self._turn + offset) % count]
            if not backend.healthy or backend.name in exclude:
                continue
            if best is None or backend.in_flight < best.in_flight:
                best = backend
        return best

    def mark_failure(self, backend: Backend, threshold: int) -> None:
        if backend.record_failure(threshold):
            self.on_down(backend)
