"""Aging (dynamic promotion), composable with any ordering.

`Aged(inner, bound)` promotes a request once it has been in the system for `bound` seconds:
promoted requests go before every unpromoted one, oldest first; the rest keep `inner`'s order.

Starvation bound. Let request r arrive at time t, and let N be the number of requests that
arrived before t and are still waiting at t + bound. From t + bound on, r is promoted, and only
promoted requests that arrived before r (at most N, and no new ones: anything arriving later
is younger) can be chosen before it. So r is chosen at the latest at the (N+1)-th pop after
t + bound, whatever `inner` says and however many urgent requests keep arriving. (An older
request preempted and pushed again also counts among those N; there are finitely many, and
each is promoted too.) `tests/policies/test_aging.py` checks this against an adversarial stream.
"""

from __future__ import annotations

from triage_router.policies.ordering import Key, Ordering
from triage_router.policies.request import RequestState


class Aged:
    stable = False  # a waiting request's key changes when it crosses the bound

    def __init__(self, inner: Ordering, bound: float) -> None:
        if bound <= 0:
            raise ValueError("aging bound must be positive")
        self.inner = inner
        self.bound = bound
        self.name = f"{inner.name}+aging"

    def promoted(self, req: RequestState, now: float) -> bool:
        return now - req.arrival >= self.bound

    def key(self, req: RequestState, now: float) -> Key:
        if self.promoted(req, now):
            return (0, req.arrival, req.request_id)
        return (1, *self.inner.key(req, now))
