from __future__ import annotations

from triage_router.policies.placement import (
    BackendState, CacheAffinity, LeastLoad, PlacementRequest, PowerOfTwoChoices, QosAware,
    RoundRobin, session_placement,
)

REQ = PlacementRequest("req-1", priority=2, prompt_tokens=1000)


def B(name, load=0, tokens=0, match=0, **kw):
    return BackendState(name, load=load, in_flight_tokens=tokens, prefix_match_tokens=match, **kw)


def test_round_robin_cycles_over_eligible_backends() -> None:
    rr = RoundRobin()
    fleet = [B("a"), B("b"), B("c", healthy=False)]
    assert [rr.place(REQ, fleet, 0.0).backend for _ in range(4)] == ["a", "b", "a", "b"]


def test_least_load_explains_every_candidate() -> None:
    p = LeastLoad().place(REQ, [B("a", 5), B("b", 2, 900), B("c", 2, 100), B("d", 0, healthy=False)], 0.0)
    assert p.backend == "c"  # tie on load 2: fewer outstanding tokens
    assert [c.backend for c in p.candidates] == ["a", "b", "c", "d"]
    assert [c.eligible for c in p.candidates] == [True, True, True, False]
    assert p.candidates[3].reason == "unhealthy"


def test_nothing_eligible_means_wait() -> None:
    p = LeastLoad().place(REQ, [B("a", 3, concurrency_cap=3), B("b", serves_priorities=frozenset({0}))], 0.0)
    assert p.backend is None
    assert "concurrency cap" in p.candidates[0].reason
    assert "priority 2" in p.candidates[1].reason


def test_power_of_two_is_deterministic_and_picks_the_lighter_sample() -> None:
    fleet = [B(n, load=i) for i, n in enumerate("abcdefgh")]
    p2 = PowerOfTwoChoices()
    first = p2.place(REQ, fleet, 0.0)
    assert p2.place(REQ, list(reversed(fleet)), 5.0) == first  # same inputs, same answer
    sampled = [c for c in first.candidates if c.eligible]
    assert len(sampled) == 2
    assert first.backend == min(sampled, key=lambda c: -c.score).backend
    assert first.backend == max(sampled, key=lambda c: c.score).backend
    # over many ids, both members of each sample are distinct and all backends get sampled
    seen = set()
    for i in range(200):
        p = p2.place(PlacementRequest(f"r{i}", 2, 10), fleet, 0.0)
        picked = [c.backend for c in p.candidates if c.eligible]
        assert len(set(picked)) == 2
        seen.update(picked)
    assert seen == set("abcdefgh")


def test_cache_affinity_sticks_to_the_longest_prefix() -> None:
    p = CacheAffinity().place(REQ, [B("a", 10, match=800), B("b", 0, match=100)], 0.0)
    assert p.backend == "a" and "prefix" in p.reason


def test_cache_affinity_falls_back_to_free_cache_without_a_useful_match() -> None:
    p = CacheAffinity().place(REQ, [B("a", 1, 5000, match=200), B("b", 3, 100, match=0)], 0.0)
    assert p.backend == "b"  # 20% match is under the 30% threshold


def test_cache_affinity_spreads_new_prefixes_by_how_many_each_cache_holds() -> None:
    # A new tenant goes where fewer tenants compete for the cache, even if that backend is
    # momentarily busier: affinity will keep the tenant there, so the split must be even.
    p = CacheAffinity().place(REQ, [B("a", 1, 100, cached_prefixes=6), B("b", 3, 5000, cached_prefixes=5)], 0.0)
    assert p.backend == "b" and "fewest cached prefixes" in p.reason
    tie = CacheAffinity().place(REQ, [B("a", 1, 100, cached_prefixes=5), B("b", 3, 5000, cached_prefixes=5)], 0.0)
    assert tie.backend == "a"  # equal prefixes: the fewer outstanding tokens


def test_cache_affinity_puts_new_prefixes_where_the_cache_has_room() -> None:
    # b holds fewer prefixes but has no room for a 1,000-token prompt: a, with room, wins.
    fleet = [B("a", cached_prefixes=4, cached_tokens=4000, kv_capacity_tokens=6000),
             B("b", cached_prefixes=3, cached_tokens=5500, kv_capacity_tokens=6000)]
    p = CacheAffinity().place(REQ, fleet, 0.0)
    assert p.backend == "a" and "with room" in p.reason
    # Unknown capacity counts as room: the rule is then the even spread above.
    unknown = [B("a", cached_prefixes=4, cached_tokens=4000), B("b", cached_prefixes=3, cached_tokens=5500)]
    assert CacheAffinity().place(REQ, unknown, 0.0).backend == "b"


def test_cache_affinity_concentrates_overflow_up_to_its_share_bound() -> None:
    def fleet(a: int, b: int) -> list[BackendState]:
        return [B("a", tokens=100, cached_prefixes=a, cached_tokens=6000, kv_capacity_tokens=6000),
                B("b", tokens=200, cached_prefixes=b, cached_tokens=6000, kv_capacity_tokens=6000)]
    ca = CacheAffinity(overflow_imbalance=1.2)  # at most 60% of the prefixes on one of two
    first = ca.place(REQ, fleet(5, 5), 0.0)
    assert first.backend == "a" and "overflow onto the fullest" in first.reason  # tie: fewer tokens
    assert ca.place(REQ, fleet(5, 6), 0.0).backend == "b"  # 7 of 12 = 58%: b keeps the overflow
    assert ca.place(REQ, fleet(5, 7), 0.0).backend == "a"  # 8 of 13 = 62% > 60%: refused
    # Replaying twelve new tenants into two full caches ends at a 5/7 split, never past 60%.
    held = {"a": 0, "b": 0}
    for _ in range(12):
        chosen = ca.place(REQ, fleet(held["a"], held["b"]), 0.0).backend
        held[chosen] += 1
        assert max(held.values()) <= max(0.6 * sum(held.values()), sum(held.values()) / 2 + 1)
    assert sorted(held.values()) == [5, 7]
    # overflow_imbalance 1 spreads evenly, the rule before this one.
    even = CacheAffinity(overflow_imbalance=1.0)
    assert even.place(REQ, fleet(5, 6), 0.0).backend == "a"


def test_cache_affinity_sends_a_forgotten_prefix_back_home() -> None:
    # No useful match anywhere, but the prompt's root was last sent to b: back to b, although
    # the new-prefix rule would pick a (fewer prefixes).
    fleet = [B("a", cached_prefixes=1), B("b", cached_prefixes=5, home=True)]
    p = CacheAffinity().place(REQ, fleet, 0.0)
    assert p.backend == "b" and "last sent" in p.reason
    # A useful match elsewhere still wins, and so does an imbalance.
    assert CacheAffinity().place(REQ, [B("a", match=900), B("b", home=True)], 0.0).backend == "a"
    loaded = [B("a", 0), B("b", 90, home=True)]
    assert CacheAffinity(abs_threshold=64).place(REQ, loaded, 0.0).backend == "a"


def test_cache_affinity_leaves_a_saturated_replica() -> None:
    ca = CacheAffinity(abs_threshold=64, rel_threshold=1.5)
    # 70 more requests and more than 1.5x: imbalanced, least loaded wins despite the match
    assert ca.place(REQ, [B("a", 100, match=1000), B("b", 30)], 0.0).backend == "b"
    # 64 more only: still sticky
    assert ca.place(REQ, [B("a", 94, match=1000), B("b", 30)], 0.0).backend == "a"
    # 70 more but under 1.5x: still sticky
    assert ca.place(REQ, [B("a", 200, match=1000), B("b", 140)], 0.0).backend == "a"


def test_qos_aware_keeps_critical_backends_for_critical_requests() -> None:
    qos = QosAware(LeastLoad(), critical=0, critical_cap=2)
    fleet = [B("fast", 1, serves_priorities=frozenset({0})), B("bulk", 9)]
    urgent = PlacementRequest("u", 0, 100)
    assert qos.place(urgent, fleet, 0.0).backend == "fast"
    assert qos.place(REQ, fleet, 0.0).backend == "bulk"  # never on the critical engine
    full = [B("fast", 2, serves_priorities=frozenset({0})), B("bulk", 9)]
    p = qos.place(urgent, full, 0.0)
    assert p.backend == "bulk" and "spill" in p.reason
    assert {c.backend: c.eligible for c in p.candidates} == {"bulk": True, "fast": False}


def test_session_placement_is_rendezvous_hashing_over_the_healthy() -> None:
    three = [BackendState("a"), BackendState("b"), BackendState("c")]
    homes = {f"s{i}": session_placement(f"s{i}", three).backend for i in range(60)}
    assert set(homes.values()) == {"a", "b", "c"}  # spread
    assert all(session_placement(s, list(reversed(three))).backend == b for s, b in homes.items())  # order-free
    # Taking one backend away moves only the sessions that lived there.
    two = [BackendState("a"), BackendState("b"), BackendState("c", healthy=False)]
    assert all(session_placement(s, two).backend == b for s, b in homes.items() if b != "c")
    assert session_placement("s0", [BackendState("a", healthy=False)]) is None
