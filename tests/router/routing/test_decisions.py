"""RecentDecisions: bounded, newest first, and holding plain values rather than errors."""

from __future__ import annotations

from triage_router.policies.placement import Placement
from triage_router.router.errors import QueueFull
from triage_router.router.routing.admission import Job
from triage_router.router.routing.decisions import Placed, RecentDecisions, Refused
from triage_router.router.routing.fingerprint import PrefixFingerprint


def _job(request_id: str, arrival: float = 10.0) -> Job:
    return Job(request_id, 3, arrival, 5, 7, PrefixFingerprint((), 5), frozenset({"a"}), model="smol",
               priority_source="rule:batch")


def test_it_keeps_the_newest_decisions_newest_first() -> None:
    recent = RecentDecisions(size=3)
    placement = Placement("a", "least-load", "least loaded", ())
    for i in range(5):
        recent.placed(12.5 + i, _job(f"r{i}"), "a", placement, {})
    entries = list(recent.newest_first())
    assert [e.request_id for e in entries] == ["r4", "r3", "r2"]
    newest = entries[0]
    assert isinstance(newest, Placed)
    assert (newest.backend, newest.priority, newest.priority_source, newest.queue_wait_s, newest.retry) == (
        "a", 3, "rule:batch", 6.5, False)


def test_a_refusal_keeps_the_errors_fields_not_the_error() -> None:
    recent = RecentDecisions()
    try:
        raise QueueFull("the admission queue is full", retry_after_s=1)
    except QueueFull as error:
        recent.refused(11.0, _job("r"), error)
    (entry,) = recent.newest_first()
    assert entry == Refused(11.0, "r", "smol", 3, "rule:batch", 429, "queue_full", "the admission queue is full")
    assert not any(isinstance(value, BaseException) for value in entry)
