"""Orderings by name, as configuration files and the simulator's `--compare` spell them."""

from __future__ import annotations

from collections.abc import Callable

from policies.aging import Aged
from policies.cost_model import CostModel
from policies.fair_share import VirtualTokenCounter
from policies.ordering import (
    AppFifo,
    FirstComeFirstServed,
    MultiLevelQueue,
    Ordering,
    PriorityJobFirst,
    Semantic,
    ShortestJobFirst,
    UrgentFirst,
    WeightedShortestJobFirst,
)

AnyOrdering = Ordering | Aged | VirtualTokenCounter

# Triage's default: Smith's rule with P0 weighted 8x, aged. The aging bound (seconds in the
# system) is a starvation backstop, not a tuning knob: under a burst every request older than
# the bound is promoted and the order degrades towards FCFS (docs/benchmarks.md).
DEFAULT_POLICY = "wsjf+aging"
DEFAULT_AGING_BOUND = 300.0

_BASE: dict[str, Callable[[CostModel], AnyOrdering]] = {
    "fcfs": lambda c: FirstComeFirstServed(),
    "sjf": lambda c: ShortestJobFirst(c),
    "pjf": lambda c: PriorityJobFirst(),
    "semantic": lambda c: Semantic(c),
    "mlq": lambda c: MultiLevelQueue(),
    "app-fifo": lambda c: AppFifo(),
    "vtc": lambda c: VirtualTokenCounter(),
    "urgent-first": lambda c: UrgentFirst(c),
    "wsjf": lambda c: WeightedShortestJobFirst(c),
}


def policy_names() -> list[str]:
    names = list(_BASE)
    return names + [f"{n}+aging" for n in names] + ["default"]


def make_ordering(
    name: str,
    cost: CostModel,
    aging_bound: float = DEFAULT_AGING_BOUND,
    wsjf_weights: tuple[float, ...] | None = None,
) -> AnyOrdering:
    """Build a fresh ordering (orderings may hold state, e.g. VTC counters): `name` is a
    base name, a base name + "+aging", or "default". `wsjf_weights` overrides the per-priority
    weights of "wsjf" (and so of the default)."""
    if name == "default":
        name = DEFAULT_POLICY
    base, _, suffix = name.partition("+")
    if base not in _BASE or suffix not in ("", "aging"):
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    if base == "wsjf" and wsjf_weights is not None:
        ordering: AnyOrdering = WeightedShortestJobFirst(cost, wsjf_weights)
    else:
        ordering = _BASE[base](cost)
    if suffix:
        return Aged(ordering, aging_bound)  # type: ignore[arg-type]
    return ordering
