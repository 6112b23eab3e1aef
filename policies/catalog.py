"""Orderings by name, as configuration files and the simulator's `--compare` spell them."""

from __future__ import annotations

from collections.abc import Callable

from triage_router.policies.admission import Admission, AdmitAll, KvHeadroom
from triage_router.policies.aging import Aged
from triage_router.policies.cost_model import CostModel
from triage_router.policies.fair_share import VirtualTokenCounter
from triage_router.policies.ordering import (
    KV_WSJF_WEIGHTS,
    AppFifo,
    FirstComeFirstServed,
    KvWeightedShortestJobFirst,
    MultiLevelQueue,
    Ordering,
    PriorityJobFirst,
    Semantic,
    ShortestJobFirst,
    UrgentFirst,
    WeightedShortestJobFirst,
)

AnyOrdering = Ordering | Aged | VirtualTokenCounter

# Triage's default: Smith's rule over remaining seconds x the larger of a request's batch-slot
# and KV shares, P0 weighted 16x and P1 3x, with KV-headroom admission and grouped prefills, aged. The
# aging bound (seconds in the system) is a starvation backstop, not a tuning knob: under a burst
# every request older than the bound is promoted and the order degrades towards FCFS
# (docs/benchmarks.md).
DEFAULT_POLICY = "kv-wsjf+aging"
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
    "kv-wsjf": lambda c: KvWeightedShortestJobFirst(c),
}

# Policies that decide admission as well as order; every other name admits like AdmitAll. The
# argument says whether a prefill iteration stalls the decoders: grouping prefills pays only then.
_ADMISSION: dict[str, Callable[[bool], Admission]] = {
    "kv-wsjf": lambda stalls: KvHeadroom(group=2 if stalls else 1),
}


def policy_names() -> list[str]:
    names = list(_BASE)
    return names + [f"{n}+aging" for n in names] + ["default"]


def _base(name: str) -> str:
    if name == "default":
        name = DEFAULT_POLICY
    base, _, suffix = name.partition("+")
    if base not in _BASE or suffix not in ("", "aging"):
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    return base


def make_ordering(
    name: str,
    cost: CostModel,
    aging_bound: float = DEFAULT_AGING_BOUND,
    wsjf_weights: tuple[float, ...] | None = None,
    kv_capacity_tokens: int | None = None,
    batch_limit: int | None = None,
) -> AnyOrdering:
    """Build a fresh ordering (orderings may hold state, e.g. VTC counters): `name` is a
    base name, a base name + "+aging", or "default". `wsjf_weights` overrides the per-priority
    weights of "wsjf" and "kv-wsjf" (and so of the default). "kv-wsjf" reads the replica's KV
    capacity and batch limit; without them it orders like "wsjf" with its own weights."""
    base = _base(name)
    if name == "default":
        name = DEFAULT_POLICY
    suffix = name.partition("+")[2]
    if base == "kv-wsjf":
        ordering: AnyOrdering = KvWeightedShortestJobFirst(
            cost, wsjf_weights or KV_WSJF_WEIGHTS, kv_capacity_tokens, batch_limit)
    elif base == "wsjf" and wsjf_weights is not None:
        ordering = WeightedShortestJobFirst(cost, wsjf_weights)
    else:
        ordering = _BASE[base](cost)
    if suffix:
        return Aged(ordering, aging_bound)  # type: ignore[arg-type]
    return ordering


def make_admission(name: str, prefill_stalls_decode: bool = True) -> Admission:
    """The admission rule of policy `name` (same names as `make_ordering`): `KvHeadroom` for
    "kv-wsjf" (and so the default), `AdmitAll` for the orderings that only order. Pass
    `prefill_stalls_decode=False` for an engine that mixes prefill chunks into decode steps:
    there a newcomer's prefill does not stall the batch, so it is not held back to group."""
    base = _base(name)
    if base not in _ADMISSION:
        return AdmitAll()
    return _ADMISSION[base](prefill_stalls_decode)
