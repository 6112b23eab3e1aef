from __future__ import annotations

from triage_router.policies.aging import Aged
from triage_router.policies.cost_model import CostModel
from triage_router.policies.fair_share import VirtualTokenCounter
from triage_router.policies.ordering import (
    AppFifo, FirstComeFirstServed, MultiLevelQueue, PriorityJobFirst, Semantic,
    ShortestJobFirst, UrgentFirst, WeightedShortestJobFirst,
)
from triage_router.policies.request import Request


def order(ordering, reqs, now=0.0):
    return [r.request_id for r in sorted(reqs, key=lambda r: ordering.key(r, now))]


def R(rid, prio, arrival, prompt=10, out=10, **kw):
    return Request(rid, prio, arrival, prompt_tokens=prompt, predicted_output_tokens=out, **kw)


REQS = [
    R("long-p0", 0, 3.0, prompt=100, out=400),
    R("short-p4", 4, 1.0, prompt=10, out=5),
    R("mid-p2", 2, 2.0, prompt=50, out=100),
    R("short-p0", 0, 4.0, prompt=10, out=20),
]


def test_fcfs_is_arrival_order() -> None:
    assert order(FirstComeFirstServed(), REQS) == ["short-p4", "mid-p2", "long-p0", "short-p0"]


def test_sjf_ignores_priority(cost: CostModel) -> None:
    assert order(ShortestJobFirst(cost), REQS) == ["short-p4", "short-p0", "mid-p2", "long-p0"]
    # without a cost model it counts tokens: 15 < 30 < 150 < 500
    assert order(ShortestJobFirst(None), REQS) == ["short-p4", "short-p0", "mid-p2", "long-p0"]


def test_pjf_is_priority_then_fifo() -> None:
    assert order(PriorityJobFirst(), REQS) == ["long-p0", "short-p0", "mid-p2", "short-p4"]


def test_semantic_is_priority_then_remaining_seconds(cost: CostModel) -> None:
    assert order(Semantic(cost), REQS) == ["short-p0", "long-p0", "mid-p2", "short-p4"]


def test_semantic_reorders_as_a_request_runs(cost: CostModel) -> None:
    a = R("a", 1, 0.0, prompt=10, out=100)
    b = R("b", 1, 1.0, prompt=10, out=60)
    sem = Semantic(cost)
    assert order(sem, [a, b]) == ["b", "a"]
    a.computed_tokens, a.output_tokens = 60, 50  # a has run 50 steps: 50 left < 60
    assert order(sem, [a, b]) == ["a", "b"]


def test_urgent_first_keeps_p0_strict_and_the_rest_sjf(cost: CostModel) -> None:
    assert order(UrgentFirst(cost), REQS) == ["short-p0", "long-p0", "short-p4", "mid-p2"]


def test_mlq_demotes_as_service_doubles() -> None:
    mlq = MultiLevelQueue(quantum=10, max_demotions=3)
    r = R("a", 1, 0.0)
    levels = []
    for served in (0, 9, 10, 29, 30, 69, 70, 10_000):
        r.output_tokens = served
        levels.append(mlq.level(r))
    assert levels == [1, 1, 2, 2, 3, 3, 4, 4]  # capped at priority + 3
    fresh = R("b", 2, 5.0)
    r.output_tokens = 10  # level 2, earlier arrival: ahead of the fresh level-2 request
    assert order(mlq, [fresh, r]) == ["a", "b"]
    r.output_tokens = 30  # level 3: now behind
    assert order(mlq, [fresh, r]) == ["b", "a"]


def test_app_fifo_lets_an_app_in_progress_go_first() -> None:
    fifo = AppFifo()
    a1 = R("a1", 2, 0.0, app="A")
    b1 = R("b1", 2, 1.0, app="B")
    order(fifo, [a1, b1])  # both apps seen
    a2 = R("a2", 2, 5.0, app="A")  # A's second step arrives after B started
    c1 = R("c1", 2, 2.0)  # no app: its own app
    assert order(fifo, [b1, c1, a2]) == ["a2", "b1", "c1"]
    fifo.forget("A")
    a3 = R("a3", 2, 6.0, app="A")
    assert order(fifo, [a3, b1]) == ["b1", "a3"]


def test_orderings_accept_priorities_outside_0_to_4(cost: CostModel) -> None:
    reqs = [R("minus", -1, 5.0), R("seven", 7, 0.0), R("two", 2, 1.0)]
    assert order(PriorityJobFirst(), reqs) == ["minus", "two", "seven"]
    assert order(Semantic(cost), reqs) == ["minus", "two", "seven"]


def test_aged_key_promotes_past_the_bound() -> None:
    aged = Aged(PriorityJobFirst(), bound=10.0)
    old = R("old", 4, 0.0)
    new = R("new", 0, 5.0)
    assert order(aged, [old, new], now=9.9) == ["new", "old"]
    assert order(aged, [old, new], now=10.0) == ["old", "new"]


def test_vtc_key_prefers_the_tenant_with_less_service() -> None:
    vtc = VirtualTokenCounter()
    a = R("a", 2, 0.0, tenant="heavy")
    b = R("b", 2, 1.0, tenant="light")
    assert order(vtc, [a, b]) == ["a", "b"]
    vtc.charge("heavy", prompt_tokens=100, output_tokens=10)
    assert vtc.counter("heavy") == 120.0  # weights 1 and 2
    assert order(vtc, [a, b]) == ["b", "a"]


def test_wsjf_lets_p0_yield_only_to_much_shorter_work() -> None:
    wsjf = WeightedShortestJobFirst(None, weights=(10.0, 1.0, 1.0, 1.0, 1.0))
    p0 = R("p0", 0, 0.0, prompt=0, out=200)  # 200 tokens / 10 = 20
    short = R("short", 3, 1.0, prompt=0, out=15)  # 15 < 20: goes first
    medium = R("medium", 3, 2.0, prompt=0, out=25)  # 25 > 20: waits
    assert order(wsjf, [medium, p0, short]) == ["short", "p0", "medium"]
    assert wsjf.weight(-3) == 10.0 and wsjf.weight(9) == 1.0
