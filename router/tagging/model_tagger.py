"""ModelTagger: a model-based classifier as a step of the priority resolution.

The classifier (the embedding classifier or the language-model tagger) only answers "which
level is this text". Around it, this step keeps what makes a model safe on the request path:

- a time budget (`timeout_ms`, 150 ms by default): past it the request goes on without the
  answer, and the fallback is counted;
- a concurrency limit: when `max_concurrency` calls are in flight, a request does not queue
  behind them, it falls back at once, so the tagger can never become the bottleneck;
- an LRU cache keyed by a hash of the text;
- `most_urgent`: the most urgent level the model may give.

Any failure (timeout, error, an answer outside 0..4, too busy, not ready) lets the next step
decide: the other tagger, or the default. Counted in `triage_tagger_fallbacks{tagger, reason}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from triage_router.policies.request import LEAST_URGENT, MOST_URGENT
from triage_router.router.config import ModelTaggerConfig
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.metrics import RouterMetrics
from triage_router.router.request_text import latest_user_text
from triage_router.router.tagging.tag_cache import TagCache

log = logging.getLogger("triage.tagging")


class RejectedAnswer(Exception):
    """The model answered something that is not one of the levels 0..4."""


class NotReady(Exception):
    """The classifier cannot answer yet (its examples are still being embedded)."""


class Classifier(Protocol):
    # The decision's source: "embedding" or "llm".
    name: str

    @property
    def ready(self) -> bool:
        """False until it can answer (the embedding classifier embeds its examples first)."""

    async def classify(self, text: str) -> int | None:
        """A level 0..4, or None to abstain. Raises RejectedAnswer, NotReady, or any I/O error."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class ModelTagger:
    def __init__(self, classifier: Classifier, config: ModelTaggerConfig, metrics: RouterMetrics) -> None:
        self.classifier = classifier
        self.name = classifier.name
        self.timeout_s = config.timeout_ms / 1000
        self.max_chars = config.max_input_chars
        self.most_urgent = config.most_urgent
        self.max_concurrency = config.max_concurrency
        self.cache = TagCache(config.cache_size)
        self.metrics = metrics
        self.in_flight = 0

    async def decide(self, ctx: RequestContext) -> PriorityDecision | None:
        text = latest_user_text(ctx.request, self.max_chars)
        if not text.strip():
            return None
        started = time.perf_counter()
        try:
            level = await self.tag(text)
        finally:
            self.metrics.child(self.metrics.tagger_latency, self.name).observe(time.perf_counter() - started)
        return None if level is None else PriorityDecision(level, self.name)

    async def tag(self, text: str) -> int | None:
        """The level for `text`, or None when the next step must decide (counted)."""
        key = self.cache.key(text)
        found, answer = self.cache.get(key)
        if found:
            self.metrics.child(self.metrics.tagger_cache_hits, self.name).inc()
            return self._bounded(answer)
        if self.in_flight >= self.max_concurrency:
            return self._fallback("busy")
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.classifier.classify(text)
        except TimeoutError:
            return self._fallback("timeout")
        except RejectedAnswer as error:
            log.debug("%s tagger answer rejected: %s", self.name, error)
            return self._fallback("rejected")
        except NotReady:
            return self._fallback("not_ready")
        except Exception as error:  # noqa: BLE001 - any failure of the model must only cost a fallback
            log.warning("%s tagger failed: %s: %s", self.name, type(error).__name__, error)
            return self._fallback("error")
        finally:
            self.in_flight -= 1
        if answer is not None and not (isinstance(answer, int) and MOST_URGENT <= answer <= LEAST_URGENT):
            return self._fallback("rejected")
        self.cache.put(key, answer)
        return self._bounded(answer)

    def _bounded(self, answer: int | None) -> int | None:
        if answer is None:
            return self._fallback("abstained")
        return max(answer, self.most_urgent)

    def _fallback(self, reason: str) -> None:  # returns None so callers can `return self._fallback(...)`
        self.metrics.child(self.metrics.tagger_fallbacks, self.name, reason).inc()
        return None
