from __future__ import annotations

from triage_router.policies.aging import Aged
from triage_router.policies.fair_share import VirtualTokenCounter, fair_share_of
from triage_router.policies.ordering import FirstComeFirstServed
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import Request


def _req(rid: str, tenant: str, arrival: float) -> Request:
    return Request(rid, 2, arrival, prompt_tokens=10, predicted_output_tokens=10, tenant=tenant)


def test_the_tenant_served_least_goes_next() -> None:
    vtc = VirtualTokenCounter()
    queue: RequestQueue[Request] = RequestQueue(vtc)
    for i in range(4):
        queue.push(_req(f"a{i}", "alpha", float(i)), 0.0)
    queue.push(_req("b0", "beta", 10.0), 0.0)
    # Uncharged, the counters tie and tenants go in name order: alpha's whole burst first.
    first = queue.pop(0.0)
    vtc.charge(first.tenant, first.prompt_tokens, first.predicted_output_tokens)
    assert first.tenant == "alpha" and queue.pop(0.0).request_id == "b0"


def test_a_correction_can_lower_a_counter_charged_on_a_prediction() -> None:
    vtc = VirtualTokenCounter(prompt_weight=1, output_weight=2)
    vtc.charge("alpha", prompt_tokens=10, output_tokens=100)
    vtc.charge("alpha", output_tokens=-90)  # it answered 10 tokens, not 100
    assert vtc.counter("alpha") == 10 + 2 * 10


def test_idle_tenants_at_or_below_the_lift_are_forgotten_past_the_bound() -> None:
    vtc = VirtualTokenCounter(max_tenants=3)
    for i, tenant in enumerate(["t0", "t1", "t2"]):
        vtc.charge(tenant, prompt_tokens=i + 1)
    vtc.charge("heavy", prompt_tokens=1000)  # served far more than anyone: must be remembered
    vtc.on_backlogged("t9", backlogged=["t2"])
    # Floor = t2's counter (3): t0 and t1 would be lifted to it anyway; heavy stays above it.
    assert set(vtc.counters) == {"t2", "t9", "heavy"}
    assert vtc.counter("t9") == 3


def test_the_fair_share_is_found_inside_aging() -> None:
    vtc = VirtualTokenCounter()
    assert fair_share_of(vtc) is vtc
    assert fair_share_of(Aged(vtc, 60.0)) is vtc
    assert fair_share_of(FirstComeFirstServed()) is None
