from __future__ import annotations

from triage_router.policies.rebalancing import (
    Migration, ReplicaState, ResidentRequest, balance_pairs, specialise_by_cache_size, tier_for,
)


def Q(rid, load, kv=0):
    return ResidentRequest(rid, kv_tokens=kv, load=load)


def test_balance_pairs_moves_work_from_the_busiest_to_the_idlest() -> None:
    busy = ReplicaState("busy", (Q("a", 50), Q("b", 30), Q("c", 20)))
    idle = ReplicaState("idle", ())
    mid = ReplicaState("mid", (Q("d", 40),))
    moves = balance_pairs([busy, idle, mid])
    # busy (100) pairs with idle (0); a (50) would leave 50/50: the gap 100 -> 0. Done.
    assert moves == [Migration("a", "busy", "idle", "balance pair busy->idle")]


def test_balance_pairs_skips_requests_that_would_overshoot() -> None:
    high = ReplicaState("h", (Q("huge", 90), Q("s1", 10), Q("s2", 10)))
    low = ReplicaState("l", (Q("x", 60),))
    # gap 50: huge (90) would make it worse; s1 then s2 shrink it to 30 then 10
    moves = balance_pairs([high, low], tolerance=0.0)
    assert [m.request_id for m in moves] == ["s1", "s2"]


def test_balanced_fleet_needs_no_move() -> None:
    assert balance_pairs([ReplicaState("a", (Q("x", 10),)), ReplicaState("b", (Q("y", 10),))]) == []
    assert balance_pairs([ReplicaState("a", (Q("x", 10),))]) == []


def test_tier_for_picks_the_smallest_fitting_tier_then_least_load() -> None:
    fleet = [
        ReplicaState("small-1", (Q("a", 5),), max_request_tokens=512),
        ReplicaState("small-2", (), max_request_tokens=512),
        ReplicaState("big", (), max_request_tokens=None),
    ]
    assert tier_for(100, fleet) == "small-2"
    assert tier_for(513, fleet) == "big"
    assert tier_for(10**9, [ReplicaState("s", (), 512)]) is None


def test_requests_that_outgrow_their_tier_migrate_up() -> None:
    fleet = [
        ReplicaState("small", (Q("grew", 3, kv=600), Q("fine", 1, kv=100)), max_request_tokens=512),
        ReplicaState("medium", (), max_request_tokens=2048),
        ReplicaState("big", (Q("huge", 9, kv=5000),), max_request_tokens=None),
    ]
    assert specialise_by_cache_size(fleet) == [
        Migration("grew", "small", "medium", "KV 600 > limit 512")
    ]
