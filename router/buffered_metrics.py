"""Metric children that count in plain Python and hand their totals to prometheus_client in batches.

prometheus_client takes a lock for every increment and walks a histogram's buckets in Python:
a relayed request made 58 calls into it and took its lock 19 times, a sixth of the relay's
Python calls. A buffered child adds to its own attributes instead (the event loop is the only
writer), and `flush()` moves what it holds into the real child: before every scrape, and, with
several workers (each reads the others' files), every FLUSH_EVERY_S as well.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Histogram

# With several workers, how stale one worker's counts may be in another worker's scrape.
FLUSH_EVERY_S = 1.0


class BufferedCounter:
    """A counter's or a gauge's child. `set` goes straight through: it is rare, and a gauge's
    reading must not be overtaken by increments made before it."""

    __slots__ = ("_target", "_pending")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def dec(self, amount: float = 1.0) -> None:
        self._pending -= amount

    def set(self, value: float) -> None:
        self._pending = 0.0
        self._target.set(value)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._target.inc(pending)


class BufferedHistogram:
    """A histogram's child: one bisect and two additions an observation."""

    __slots__ = ("_target", "_bounds", "_counts", "_sum", "_observed")

    def __init__(self, target: Any, upper_bounds: list[float]) -> None:
        self._target = target
        self._bounds = upper_bounds  # ends with +Inf, as prometheus_client keeps them
        self._counts = [0] * len(upper_bounds)
        self._sum = 0.0
        self._observed = False

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount, as prometheus_client's `le` buckets.
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount
        self._observed = True

    def flush(self) -> None:
        if not self._observed:
            return
        # prometheus_client has no call that adds many observations at once; its child keeps a
        # value per bucket and one for the sum (tests/router/test_buffered_metrics.py checks
        # that a flushed histogram renders as one observed directly).
        buckets, counts = self._target._buckets, self._counts  # noqa: SLF001
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self._target._sum.inc(self._sum)  # noqa: SLF001
        self._sum = 0.0
        self._observed = False


def buffered(metric: Any, child: Any) -> BufferedCounter | BufferedHistogram:
    """The buffered form of `child`, a labelled child of `metric`."""
    if isinstance(metric, Histogram):
        return BufferedHistogram(child, child._upper_bounds)  # noqa: SLF001
    return BufferedCounter(child)
