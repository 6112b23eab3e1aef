"""Preemption: whom to evict when KV memory runs out, and how.

Victim: the lowest priority (largest number), then the longest predicted remaining work: it
has the most to lose least, and evicting it frees its blocks for the longest time. An engine
that orders by something other than priority can pass its own `rank` (the ordering's key) so
that it never evicts a request its ordering would immediately schedule again (thrashing).

Mode: swapping the KV out and back costs `swap_s_per_token` per token to reload; recomputing
costs a prefill of the whole context, pc1·n² + pc2·n. Pick the cheaper; recompute when the
host has no room for the swapped blocks.

`plan_evictions` applies both rules to a KV shortage: evict only requests ranked below the
requester, and only when that makes room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

from triage_router.policies.cost_model import CostModel
from triage_router.policies.request import RequestState, remaining_tokens

R = TypeVar("R", bound=RequestState)


class PreemptionMode(Enum):
    SWAP = "swap"
    RECOMPUTE = "recompute"


def victim_rank(req: RequestState, cost: CostModel | None = None) -> tuple[Any, ...]:
    """Larger = evicted first: (priority, remaining seconds or tokens, arrival, id)."""
    remaining = cost.remaining_seconds(req) if cost else float(remaining_tokens(req))
    return (req.priority, remaining, req.arrival, req.request_id)


def choose_victim(
    candidates: Iterable[R],
    cost: CostModel | None = None,
    rank: Callable[[R], Any] | None = None,
) -> R | None:
    """The candidate with the largest rank (default `victim_rank`), or None if there is none."""
    key = rank or (lambda r: victim_rank(r, cost))
    best: R | None = None
    best_key: Any = None
    for req in candidates:
        k = key(req)
        if best is None or best_key < k:
            best, best_key = req, k
    return best


def choose_mode(
    cost: CostModel, tokens: int, host_free_tokens: int | None = None
) -> PreemptionMode:
    """Swap if reloading `tokens` of KV is cheaper than recomputing them and the host has room."""
    if host_free_tokens is not None and host_free_tokens < tokens:
        return PreemptionMode.RECOMPUTE
    if cost.swap_seconds(tokens) < cost.recompute_seconds(tokens):
        return PreemptionMode.SWAP
    return PreemptionMode.RECOMPUTE


def plan_evictions(
    need: int,
    free: int,
    candidates: Iterable[R],
    blocks: Callable[[R], int],
    rank: Callable[[R], Any],
    requester_rank: Any,
) -> list[R] | None:
    """Which requests to evict so that `need` KV blocks fit when `free` are free.

    Only candidates ranked strictly after the requester (`requester_rank < rank(c)`) and
    holding blocks may go, worst first, and only as many as needed. Returns None, meaning
    "evict nobody, the requester waits", when even all of them would not make room: evicting
    some anyway frees nothing useful and the victims reload next iteration (a livelock).
    Returns [] when the blocks are already free.
    """
    if free >= need:
        return []
    eligible = sorted(
        (c for c in candidates if blocks(c) > 0 and requester_rank < rank(c)),
        key=rank,
        reverse=True,
    )
    if free + sum(blocks(c) for c in eligible) < need:
        return None
    chosen: list[R] = []
    for c in eligible:
        if free >= need:
            break
        chosen.append(c)
        free += blocks(c)
    return chosen
