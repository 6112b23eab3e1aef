"""The starvation bound of `Aged`, checked against an adversarial stream."""

from __future__ import annotations

import pytest

from triage_router.policies.aging import Aged
from triage_router.policies.cost_model import CostModel
from triage_router.policies.ordering import PriorityJobFirst, Semantic, ShortestJobFirst
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import Request


def R(rid, prio, arrival, out=10):
    return Request(rid, prio, arrival, prompt_tokens=10, predicted_output_tokens=out)


@pytest.mark.parametrize("inner_name", ["pjf", "sjf", "semantic"])
def test_a_low_priority_long_request_is_served_within_the_bound(
    inner_name: str, cost: CostModel
) -> None:
    inner = {"pjf": PriorityJobFirst(), "sjf": ShortestJobFirst(cost), "semantic": Semantic(cost)}[
        inner_name
    ]
    bound, service = 5.0, 1.0  # one pop per second of simulated time
    q: RequestQueue[Request] = RequestQueue(Aged(inner, bound))
    # A backlog that arrived before the victim, then the victim, then a flood of urgent short
    # requests that arrive faster than they are served: without aging it would never run.
    backlog = 3
    for i in range(backlog):
        q.push(R(f"early{i}", 4, -0.5 + i * 0.1, out=500), -0.5)
    victim = R("victim", 4, 0.0, out=499)
    q.push(victim, 0.0)
    now, n, pops = 0.0, 0, 0
    served_at = None
    while served_at is None:
        for _ in range(2):  # two urgent arrivals per pop
            q.push(R(f"urgent{n}", 0, now, out=1), now)
            n += 1
        r = q.pop(now)
        pops += 1
        if r.request_id == "victim":
            served_at = now
        now += service
        assert pops < 1000, "victim starved"
    # Bound: promoted at arrival + bound, then at most `backlog` older promoted requests first.
    assert served_at <= victim.arrival + bound + backlog * service


def test_without_aging_the_same_stream_starves_the_victim() -> None:
    q: RequestQueue[Request] = RequestQueue(PriorityJobFirst())
    q.push(R("victim", 4, 0.0), 0.0)
    now = 0.0
    for n in range(200):
        q.push(R(f"urgent{n}", 0, now), now)
        q.push(R(f"urgent{n}b", 0, now), now)
        assert q.pop(now).request_id != "victim"
        now += 1.0


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Aged(PriorityJobFirst(), 0.0)
