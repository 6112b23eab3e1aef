from __future__ import annotations

from triage_router.policies.cost_model import CostModel
from triage_router.policies.preemption import (
    PreemptionMode, choose_mode, choose_victim, plan_evictions, victim_rank,
)
from triage_router.policies.request import Request


def R(rid, prio, out, done=0):
    return Request(rid, prio, 0.0, prompt_tokens=10, predicted_output_tokens=out,
                   output_tokens=done, computed_tokens=10 + done)


def test_victim_is_lowest_priority_then_longest_remaining(cost: CostModel) -> None:
    reqs = [R("p4-short", 4, 20), R("p4-long", 4, 300), R("p1-huge", 1, 900), R("p4-done", 4, 400, 390)]
    assert choose_victim(reqs, cost).request_id == "p4-long"
    assert choose_victim(reqs).request_id == "p4-long"  # token count without a cost model
    assert choose_victim([r for r in reqs if r.priority < 4], cost).request_id == "p1-huge"
    assert choose_victim([], cost) is None


def test_victim_with_an_ordering_rank_evicts_the_ordering_s_last() -> None:
    reqs = [R("a", 4, 20), R("b", 0, 300)]
    # e.g. an SJF engine: the longest goes, whatever its priority
    assert choose_victim(reqs, rank=lambda r: r.predicted_output_tokens).request_id == "b"
    assert victim_rank(reqs[0]) > victim_rank(reqs[1])


def test_mode_follows_the_cheaper_cost() -> None:
    cheap_swap = CostModel(dc1=0, dc2=0, pc1=1e-6, pc2=1e-4, swap_s_per_token=1e-5)
    dear_swap = CostModel(dc1=0, dc2=0, pc1=1e-9, pc2=1e-4, swap_s_per_token=3e-4)
    assert choose_mode(cheap_swap, 500) is PreemptionMode.SWAP
    assert choose_mode(dear_swap, 500) is PreemptionMode.RECOMPUTE
    # the quadratic term makes recompute lose for long contexts: 1e-9·n² + 1e-4·n > 3e-4·n
    assert choose_mode(dear_swap, 300_000) is PreemptionMode.SWAP
    # no room on the host: recompute regardless
    assert choose_mode(cheap_swap, 500, host_free_tokens=499) is PreemptionMode.RECOMPUTE


def test_plan_evictions_takes_only_lower_ranked_and_only_if_it_makes_room() -> None:
    blocks = {"a": 3, "b": 2, "c": 4, "d": 0}
    rank = {"a": 1, "b": 5, "c": 7, "d": 9}  # larger = worse

    def plan(need: int, free: int, requester: int) -> list[str] | None:
        return plan_evictions(need, free, list(blocks), blocks.__getitem__, rank.__getitem__, requester)

    assert plan(2, 2, requester=0) == []  # already room
    assert plan(5, 2, requester=0) == ["c"]  # worst first, and no more than needed
    assert plan(7, 2, requester=0) == ["c", "b"]
    assert plan(7, 2, requester=5) is None  # only c ranks below 5: 2 + 4 < 7, evict nobody
    assert plan(6, 2, requester=5) == ["c"]
    assert plan(1, 0, requester=9) is None  # nothing below the worst
