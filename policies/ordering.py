"""Queue orderings: which waiting (or running) request goes first.

An `Ordering` maps a request and `now` to a key; the smaller key goes first. Every key ends
with (arrival, request_id), so two distinct requests never tie and every run is reproducible.

`stable` says whether a *waiting* request's key stays the same until it is popped. Every
ordering in this module is stable (keys read only the request's own fields, which do not change
while it waits), so `RequestQueue` keys each request once, at push. The orderings whose keys do
move while requests wait (aging, fair share) live in `triage_router.policies.aging` and `triage_router.policies.fair_share`
and the queue has a dedicated structure for each.

Keys of *running* requests do change (remaining work shrinks, MLQ demotes): the engine re-keys
them each iteration with `key(req, now)`, and re-pushes a preempted request so it is keyed anew.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from triage_router.policies.cost_model import CostModel
from triage_router.policies.request import RequestState, context_tokens, remaining_output_tokens, remaining_tokens

Key = tuple[Any, ...]


class Ordering(Protocol):
    name: str
    stable: bool

    def key(self, req: RequestState, now: float) -> Key: ...


def _tail(req: RequestState) -> Key:
    return (req.arrival, req.request_id)


class FirstComeFirstServed:
    """FCFS: arrival order."""

    name = "fcfs"
    stable = True

    def key(self, req: RequestState, now: float) -> Key:
        return _tail(req)


class _RemainingWork:
    """Remaining work in predicted seconds when a cost model is given, else in tokens."""

    def __init__(self, cost: CostModel | None) -> None:
        self.cost = cost

    def remaining(self, req: RequestState) -> float:
        if self.cost is None:
            return float(remaining_tokens(req))
        return self.cost.remaining_seconds(req)


class ShortestJobFirst(_RemainingWork):
    """SJF on predicted remaining work, blind to priority (the paper's SJF baseline)."""

    name = "sjf"
    stable = True

    def key(self, req: RequestState, now: float) -> Key:
        return (self.remaining(req), *_tail(req))


class PriorityJobFirst:
    """PJF: priority first, FIFO within a priority."""

    name = "pjf"
    stable = True

    def key(self, req: RequestState, now: float) -> Key:
        return (req.priority, *_tail(req))


class Semantic(_RemainingWork):
    """The paper's order: (priority, predicted remaining seconds), lexicographically.

    Remaining seconds include prefill still owed and the reload of swapped KV
    (`CostModel.remaining_seconds`), and shrink as the request runs.
    """

    name = "semantic"
    stable = True

    def __init__(self, cost: CostModel) -> None:
        super().__init__(cost)

    def key(self, req: RequestState, now: float) -> Key:
        return (req.priority, self.remaining(req), *_tail(req))


class UrgentFirst(_RemainingWork):
    """Triage's default: strict precedence for the urgent priorities, SJF for everyone else.

    The paper's ordering lets P4 wait 11-13x as long as P0 because every level is strict. Most
    of the mean-latency win of SJF comes from ordering by length, and most of the value of
    priorities comes from the urgent class never queueing behind bulk work. So: priorities at or
    below `urgent` go first (ordered among themselves like Semantic), all others are one class
    ordered by remaining work. Compose with `Aged` to bound the wait of long requests.
    """

    name = "urgent-first"
    stable = True

    def __init__(self, cost: CostModel | None, urgent: int = 0) -> None:
        super().__init__(cost)
        self.urgent = urgent

    def key(self, req: RequestState, now: float) -> Key:
        if req.priority <= self.urgent:
            return (0, req.priority, self.remaining(req), *_tail(req))
        return (1, 0, self.remaining(req), *_tail(req))


class MultiLevelQueue:
    """MLQ with demotion: a request enters at its priority and drops one level each time its
    service doubles (after `quantum`, 2·`quantum`, 4·`quantum`... generated tokens), at most
    `max_demotions` levels. It approximates SJF without any length prediction; FIFO in a level.
    """

    name = "mlq"
    stable = True

    def __init__(self, quantum: int = 32, max_demotions: int = 4) -> None:
        if quantum <= 0:
            raise ValueError("quantum must be positive")
        self.quantum = quantum
        self.max_demotions = max_demotions

    def level(self, req: RequestState) -> int:
        demotions = int(math.log2(1 + req.output_tokens / self.quantum))
        return req.priority + min(demotions, self.max_demotions)

    def key(self, req: RequestState, now: float) -> Key:
        return (self.level(req), *_tail(req))


class AppFifo:
    """Parrot's App-FIFO (flow scheduling): requests of an app already in progress go before
    new apps; requests are FIFO within an app.

    An app's rank is the arrival of its first request seen, so an app that started earlier
    keeps precedence as its later steps arrive: depth-first over apps. The rank never changes
    once set, which keeps the ordering stable. Call `forget(app)` when an app's session ends
    so the table stays bounded. Requests without an app are each their own app.
    """

    name = "app-fifo"
    stable = True

    def __init__(self) -> None:
        self._first_seen: dict[str, float] = {}

    def app_rank(self, req: RequestState) -> float:
        if not req.app:
            return req.arrival
        return self._first_seen.setdefault(req.app, req.arrival)

    def forget(self, app: str) -> None:
        self._first_seen.pop(app, None)

    def key(self, req: RequestState, now: float) -> Key:
        return (self.app_rank(req), *_tail(req))


class WeightedShortestJobFirst(_RemainingWork):
    """Smith's rule (WSPT): remaining work divided by the priority's weight, smallest first.

    It minimizes the weighted sum of completion times on one server, so its weights trace the
    trade-off between SJF (all weights equal: best mean) and strict priority (weights far
    apart: best P0). With the default weights a P0 request yields only to requests an eighth as long.
    Priorities outside the weight table take the nearest end's weight.
    """

    name = "wsjf"
    stable = True

    def __init__(self, cost: CostModel | None, weights: tuple[float, ...] = (8.0, 1.0, 1.0, 1.0, 1.0)) -> None:
        super().__init__(cost)
        if not weights or min(weights) <= 0:
            raise ValueError("weights must be positive")
        self.weights = weights

    def weight(self, priority: int) -> float:
        return self.weights[min(max(priority, 0), len(self.weights) - 1)]

    def key(self, req: RequestState, now: float) -> Key:
        return (self.remaining(req) / self.weight(req.priority), *_tail(req))


# kv-wsjf's (and so the default's) weight per priority 0..4, chosen on the paper-mode frontier
# (bench/scheduling/paper_frontier.py).
KV_WSJF_WEIGHTS = (16.0, 3.0, 1.0, 1.0, 1.0)


class KvWeightedShortestJobFirst(WeightedShortestJobFirst):
    """WSPT whose job size is the share of the replica a request occupies, times its time.

    A batch slot is one resource (1/`batch_limit` of the batch) and KV memory another
    (the tokens the request will hold when it completes, context plus predicted output still
    to come, over `kv_capacity_tokens`). The size is remaining seconds × the larger of the two
    shares, divided by the priority's weight. Where memory is plentiful the slot share dominates
    and this is WSPT; where memory binds, a request that pins much KV for long counts as
    larger, so short *and* small requests go first and more of them run at once. Without a
    capacity it is plain WSPT. P0's default weight is 16, not 8: a KV share spreads sizes
    further apart than seconds alone, so P0 needs more weight for the same precedence. P1's is
    3: incidents in progress go to P1, and with weight 1 a P1 waited 1.4x as long as under
    priority-blind SJF (docs/design/policies.md, "P1").
    """

    name = "kv-wsjf"
    stable = True

    def __init__(
        self,
        cost: CostModel | None,
        weights: tuple[float, ...] = KV_WSJF_WEIGHTS,
        kv_capacity_tokens: int | None = None,
        batch_limit: int | None = None,
    ) -> None:
        super().__init__(cost, weights)
        if (kv_capacity_tokens is not None and kv_capacity_tokens <= 0) or (batch_limit is not None and batch_limit <= 0):
            raise ValueError("kv_capacity_tokens and batch_limit must be positive")
        self.kv_capacity_tokens = kv_capacity_tokens
        self.batch_limit = batch_limit

    def share(self, req: RequestState) -> float:
        if self.kv_capacity_tokens is None:
            return 1.0
        slot = 1.0 / self.batch_limit if self.batch_limit else 0.0
        footprint = context_tokens(req) + remaining_output_tokens(req)
        return max(slot, footprint / self.kv_capacity_tokens)

    def key(self, req: RequestState, now: float) -> Key:
        return (self.remaining(req) * self.share(req) / self.weight(req.priority), *_tail(req))
