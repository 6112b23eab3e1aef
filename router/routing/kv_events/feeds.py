"""KVEventFeeds: the KV-event subscribers of the pool's backends, and the tokenizers that turn
a request into what those backends hash.

ZeroMQ, tokenizers and jinja2 are imported only once a backend names a publisher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from triage_router.router.config import KVEventsConfig, RoutingConfig
from triage_router.router.metrics import RouterMetrics
from triage_router.router.routing.backends import Backend

if TYPE_CHECKING:
    from triage_router.router.routing.kv_events.prompt_tokens import PromptTokenizer, PromptTokens

log = logging.getLogger("triage.kv_events")


class KVEventFeeds:
    def __init__(self, routing: RoutingConfig, metrics: RouterMetrics) -> None:
        self.routing = routing
        self.metrics = metrics
        # Each subscribed backend's task, and the settings it was started with.
        self._tasks: dict[Backend, tuple[asyncio.Task[None], KVEventsConfig]] = {}
        self._tokenizers: dict[str, PromptTokenizer | None] = {}

    def attach(self, backends: Iterable[Backend]) -> None:
        """Subscribe to each backend that names a publisher (from a running event loop)."""
        for backend in backends:
            events = backend.config.events
            if events is None or backend in self._tasks or self._tokenizer(backend.config.tokenizer) is None:
                continue
            from triage_router.router.routing.kv_events.block_index import KVBlockIndex
            from triage_router.router.routing.kv_events.subscriber import KVEventSubscriber

            outcomes = self.metrics.kv_events
            backend.kv_feed = KVEventSubscriber(
                backend.name, events.endpoint, KVBlockIndex(), replay_endpoint=events.replay_endpoint or None,
                topic=events.topic, rewarm_s=self.routing.kv_events_rewarm_s,
                on_batch=lambda outcome, name=backend.name: self.metrics.child(outcomes, name, outcome).inc())
            self._tasks[backend] = (asyncio.ensure_future(self._follow(backend)), events)

    def reconfigure(self, backends: list[Backend]) -> None:
        """After a reload: drop the feeds of backends gone or whose publisher changed, then
        subscribe to whatever names one now."""
        for backend, (task, events) in list(self._tasks.items()):
            if backend not in backends or backend.config.events != events:
                self._detach(backend)
        self.attach(backends)

    async def stop(self) -> None:
        tasks = [task for task, _ in self._tasks.values()]
        for backend in list(self._tasks):
            self._detach(backend)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _detach(self, backend: Backend) -> None:
        task, _ = self._tasks.pop(backend)
        task.cancel()
        backend.kv_feed = None

    async def tokenize(self, body: bytes, chat: bool, candidates: Iterable[Backend]) -> dict[str, PromptTokens]:
        """The prompt's tokens under each tokenizer a candidate with events needs (usually one);
        none when no candidate has events, or the prompt cannot be rendered exactly."""
        paths = {b.config.tokenizer for b in candidates if b.kv_feed is not None}
        if not paths:
            return {}
        started = time.perf_counter()
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return {}
        found: dict[str, PromptTokens] = {}
        for path in paths:
            tokenizer = self._tokenizers.get(path)
            if tokenizer is not None and isinstance(decoded, dict):
                tokens = await (tokenizer.chat(decoded) if chat else tokenizer.completion(decoded))
                if tokens is not None:
                    found[path] = tokens
        self.metrics.tokenize_time.observe(time.perf_counter() - started)
        return found

    def export(self, backends: Iterable[Backend]) -> None:
        """The indexes' sizes and trust, for /metrics."""
        for backend in backends:
            feed = backend.kv_feed
            if feed is not None:
                self.metrics.child(self.metrics.kv_index_blocks, backend.name).set(len(feed.index))
                self.metrics.child(self.metrics.kv_index_trusted, backend.name).set(1 if feed.trusted else 0)

    def _tokenizer(self, path: str) -> PromptTokenizer | None:
        if path not in self._tokenizers:
            from triage_router.router.routing.kv_events.prompt_tokens import PromptTokenizer, TokenizerLoadError

            try:
                self._tokenizers[path] = PromptTokenizer(path)
            except TokenizerLoadError as error:
                log.error("kv events: %s; the backends using it are routed by the approximate index", error)
                self._tokenizers[path] = None
        return self._tokenizers[path]

    async def _follow(self, backend: Backend) -> None:
        feed = backend.kv_feed
        assert feed is not None
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take routing down: that backend loses its events
            log.exception("kv events: the subscriber of %s stopped", backend.name)
            backend.kv_feed = None
