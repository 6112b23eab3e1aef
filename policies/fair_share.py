"""Fair share between tenants: the Virtual Token Counter (VTC, Sheng et al., OSDI'24).

Each tenant has a counter of weighted tokens served. The tenant with the smallest counter among
those with waiting requests goes next; within a tenant, `inner` orders its requests. When a
tenant goes from idle to backlogged, its counter is lifted to the smallest counter of the
backlogged tenants (or to the last served tenant's counter if none is waiting), so idling does
not bank credit it could later spend starving the others.

Every server that runs it charges the tokens it actually serves, through `charge`: the simulator
and our engine as they prefill and decode, the router when it places a request (its prompt and
predicted output) and again when the answer reports its real output. Without charging, every
counter stays at 0 and tenants are served in name order.

The table forgets idle tenants: one whose counter is at or below what the lift would give it
anyway gains nothing from being remembered, so once the table holds more than `max_tenants`,
each newly backlogged tenant prunes such entries.

A waiting request's rank moves as *other* tenants are served, so no per-request key stays
valid. `RequestQueue` therefore keeps one sub-queue per tenant and compares tenants at pop
(O(tenants)); `key()` exists for sorting small lists such as a running batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from triage_router.policies.ordering import FirstComeFirstServed, Key, Ordering
from triage_router.policies.request import RequestState


class VirtualTokenCounter:
    stable = False

    def __init__(
        self,
        inner: Ordering | None = None,
        prompt_weight: float = 1.0,
        output_weight: float = 2.0,
        max_tenants: int = 1024,
    ) -> None:
        self.inner: Ordering = inner or FirstComeFirstServed()
        if not self.inner.stable:
            raise TypeError("VTC needs a stable inner ordering")
        self.prompt_weight = prompt_weight
        self.output_weight = output_weight
        self.max_tenants = max_tenants
        self.counters: dict[str, float] = {}
        self._last_charged = 0.0
        self.name = "vtc" if self.inner.name == "fcfs" else f"vtc({self.inner.name})"

    def group_of(self, req: RequestState) -> str:
        return req.tenant

    def counter(self, tenant: str) -> float:
        return self.counters.get(tenant, 0.0)

    def group_rank(self, tenant: str, now: float) -> Key:
        return (self.counter(tenant), tenant)

    def on_backlogged(self, tenant: str, backlogged: Iterable[str]) -> None:
        """Lift an idle tenant that just queued a request (VTC's counter lift)."""
        others = [self.counter(t) for t in backlogged if t != tenant]
        floor = min(others) if others else self._last_charged
        self.counters[tenant] = max(self.counter(tenant), floor)
        if len(self.counters) > self.max_tenants:
            keep = set(backlogged) | {tenant}
            self.counters = {t: c for t, c in self.counters.items() if t in keep or c > floor}

    def charge(self, tenant: str, prompt_tokens: int = 0, output_tokens: int = 0) -> None:
        """Account service: call as tokens are prefilled / generated for `tenant`. A negative
        count corrects an earlier charge made on a prediction."""
        value = self.counter(tenant) + (
            self.prompt_weight * prompt_tokens + self.output_weight * output_tokens
        )
        self.counters[tenant] = value
        self._last_charged = value

    def key(self, req: RequestState, now: float) -> Key:
        return (*self.group_rank(req.tenant, now), *self.inner.key(req, now))


def fair_share_of(ordering: object) -> VirtualTokenCounter | None:
    """The VTC inside an ordering (plain, or wrapped by aging), whose counters need charging."""
    for candidate in (ordering, getattr(ordering, "inner", None)):
        if isinstance(candidate, VirtualTokenCounter):
            return candidate
    return None
