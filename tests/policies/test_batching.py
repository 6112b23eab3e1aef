from __future__ import annotations

from triage_router.policies.admission import AdmitAll, KvHeadroom
from triage_router.policies.batching import displacement_victim, form_batch
from triage_router.policies.ordering import FirstComeFirstServed, PriorityJobFirst, ShortestJobFirst
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import Request


def R(rid: str, prio: int = 2, out: int = 10, arrival: float = 0.0, prompt: int = 10) -> Request:
    return Request(rid, prio, arrival, prompt_tokens=prompt, predicted_output_tokens=out)


def _queue(ordering, *reqs: Request) -> RequestQueue[Request]:
    q: RequestQueue[Request] = RequestQueue(ordering)
    for r in reqs:
        q.push(r, 0.0)
    return q


def _form(members, queue, ordering, *, limit=2, admission=None, start=lambda r: True, displaces=True):
    displaced: list[Request] = []
    change = form_batch(
        members, queue, batch_limit=limit, admission=admission or AdmitAll(), kv_capacity_tokens=1000,
        key=lambda r: ordering.key(r, 0.0), now=0.0, start=start,
        displace=displaced.append if displaces else None,
    )
    assert change.displaced == displaced  # the callback ran for exactly the reported ones
    return change


def test_free_slots_fill_in_the_orderings_order() -> None:
    sjf = ShortestJobFirst(None)
    q = _queue(sjf, R("long", out=90), R("short", out=5), R("mid", out=40))
    change = _form([], q, sjf)
    assert [r.request_id for r in change.admitted] == ["short", "mid"]
    assert [r.request_id for r in q] == ["long"]


def test_a_full_batch_keeps_its_members_under_fcfs() -> None:
    fcfs = FirstComeFirstServed()
    members = [R("a", arrival=0.0), R("b", arrival=1.0)]
    q = _queue(fcfs, R("c", prio=0, arrival=2.0))
    change = _form(members, q, fcfs)
    assert not change.admitted and not change.displaced


def test_a_better_ranked_request_displaces_the_worst_member() -> None:
    pjf = PriorityJobFirst()
    members = [R("p1", prio=1), R("p4", prio=4), R("p3", prio=3)]
    q = _queue(pjf, R("p0", prio=0, arrival=5.0))
    change = _form(members, q, pjf, limit=3)
    assert [r.request_id for r in change.displaced] == ["p4"]
    assert [r.request_id for r in change.admitted] == ["p0"]


def test_equal_keys_never_displace() -> None:
    pjf = PriorityJobFirst()
    members = [R("a", prio=2, arrival=0.0), R("b", prio=2, arrival=1.0)]
    assert displacement_victim(pjf.key(R("c", prio=2, arrival=2.0), 0.0), members, lambda r: pjf.key(r, 0.0)) is None


def test_a_refused_start_leaves_the_head_waiting_and_nobody_overtakes_it() -> None:
    sjf = ShortestJobFirst(None)
    q = _queue(sjf, R("short", out=5), R("long", out=90))
    change = _form([], q, sjf, start=lambda r: r.request_id != "short")
    assert not change.admitted
    assert len(q) == 2


def test_headroom_skips_what_does_not_fit_and_tries_the_next() -> None:
    pjf = PriorityJobFirst()
    # 1000 tokens of KV: the P0 member ahead reserves 800 + 1; "wide" (next in order) would add
    # 300 + 2, "narrow" 10 + 64 (the horizon). KvHeadroom(group=1) skips "wide", admits "narrow".
    member = R("member", prio=0, out=1, prompt=800)
    q = _queue(pjf, R("wide", prio=1, out=2, prompt=300, arrival=0.0),
               R("narrow", prio=1, out=80, prompt=10, arrival=1.0))
    change = _form([member], q, pjf, limit=4, admission=KvHeadroom(group=1))
    assert [r.request_id for r in change.admitted] == ["narrow"]
    assert [r.request_id for r in q] == ["wide"]


def test_a_replica_that_never_displaces_leaves_a_full_batch_alone() -> None:
    pjf = PriorityJobFirst()
    members = [R("p4", prio=4)]
    q = _queue(pjf, R("p0", prio=0))
    change = _form(members, q, pjf, limit=1, displaces=False)
    assert not change.admitted and len(q) == 1
