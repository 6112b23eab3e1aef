from __future__ import annotations

import pytest

from triage_router.policies.admission import AdmitAll, KvHeadroom
from triage_router.policies.catalog import DEFAULT_POLICY, make_admission, make_ordering
from triage_router.policies.cost_model import CostModel
from triage_router.policies.ordering import KvWeightedShortestJobFirst, WeightedShortestJobFirst
from triage_router.policies.request import Request


def R(rid: str, prompt: int, out: int, done: int = 0, prio: int = 2) -> Request:
    return Request(rid, prio, 0.0, prompt_tokens=prompt, predicted_output_tokens=out, output_tokens=done)


def test_reserved_tokens_is_context_plus_output_to_come_within_the_horizon() -> None:
    rule = KvHeadroom(horizon_tokens=64)
    assert rule.reserved_tokens(R("a", 100, 500)) == 164  # 500 to come, capped at 64
    assert rule.reserved_tokens(R("b", 100, 40, done=10)) == 140  # context 110 + 30 to come
    assert rule.reserved_tokens(R("c", 100, 40, done=60)) == 161  # outlived its prediction: 1


def test_headroom_admits_only_what_fits_after_the_members_grow() -> None:
    rule = KvHeadroom(horizon_tokens=64)
    members = [R("m1", 200, 500), R("m2", 136, 500)]  # 264 + 200 = 464 reserved
    assert rule.fits(R("small", 36, 500), members, 564)  # 464 + 100 = 564: fits exactly
    assert not rule.fits(R("big", 37, 500), members, 564)  # 565 > 564
    assert rule.fits(R("huge", 10_000, 500), [], 564)  # an empty batch always admits


def test_grouping_opens_the_batch_only_for_several_prefills_at_once() -> None:
    rule = KvHeadroom(group=2)
    assert not rule.opens(free_slots=1, waiting=5, running=15)  # one slot: wait for a second
    assert rule.opens(free_slots=2, waiting=5, running=14)
    assert rule.opens(free_slots=1, waiting=1, running=15)  # only one waits: no one to group with
    assert rule.opens(free_slots=1, waiting=5, running=0)  # an idle batch never waits
    assert not rule.opens(free_slots=0, waiting=5, running=16)
    assert not rule.opens(free_slots=3, waiting=0, running=13)
    with pytest.raises(ValueError):
        KvHeadroom(group=0)


def test_admit_all_fills_every_free_slot() -> None:
    rule = AdmitAll()
    assert rule.opens(1, 5, 15) and not rule.opens(0, 5, 16) and not rule.opens(2, 0, 14)
    assert rule.fits(R("big", 10_000, 500), [R("m", 10_000, 500)], 100)


def test_kv_wsjf_sizes_by_the_larger_of_slot_and_kv_share() -> None:
    cost = CostModel(dc1=0.0, dc2=1.0, pc1=0.0, pc2=0.0, swap_s_per_token=0.0)  # 1 s per token
    kv = KvWeightedShortestJobFirst(cost, (4.0, 1.0, 1.0, 1.0, 1.0), kv_capacity_tokens=1000, batch_limit=10)
    short_wide = R("short-wide", 600, 20)  # KV share 620/1000 = 0.62: size 20·0.62 = 12.4
    long_narrow = R("long-narrow", 0, 90)  # slot share 0.1 > 90/1000: size 90·0.1 = 9
    p0 = R("p0", 200, 200, prio=0)  # KV share 0.4, size 200·0.4/4 = 20
    assert kv.share(short_wide) == pytest.approx(0.62) and kv.share(long_narrow) == pytest.approx(0.1)
    assert [r.request_id for r in sorted([p0, short_wide, long_narrow], key=lambda r: kv.key(r, 0.0))] == [
        "long-narrow", "short-wide", "p0"]
    # by seconds alone (WSPT) the narrow request would go last: 90 > 200/4 > 20
    wsjf = WeightedShortestJobFirst(cost, (4.0, 1.0, 1.0, 1.0, 1.0))
    assert [r.request_id for r in sorted([p0, short_wide, long_narrow], key=lambda r: wsjf.key(r, 0.0))] == [
        "short-wide", "p0", "long-narrow"]
    # without a capacity it is WSPT with its weights
    plain = KvWeightedShortestJobFirst(cost, (4.0, 1.0, 1.0, 1.0, 1.0))
    assert plain.key(p0, 0.0) == wsjf.key(p0, 0.0)


def test_catalog_pairs_kv_wsjf_with_headroom_admission() -> None:
    cost = CostModel(0.0, 1.0, 0.0, 0.0, 0.0)
    assert DEFAULT_POLICY == "kv-wsjf+aging"
    assert isinstance(make_admission("default"), KvHeadroom)
    assert isinstance(make_admission("kv-wsjf"), KvHeadroom)
    assert isinstance(make_admission("semantic+aging"), AdmitAll)
    assert make_admission("default").group == 2  # type: ignore[attr-defined]
    assert make_admission("default", prefill_stalls_decode=False).group == 1  # type: ignore[attr-defined]
    ordering = make_ordering("kv-wsjf", cost, kv_capacity_tokens=1000, batch_limit=10)
    assert isinstance(ordering, KvWeightedShortestJobFirst) and ordering.weights[0] == 16.0
    assert make_ordering("default", cost).name == "kv-wsjf+aging"
    assert make_ordering("kv-wsjf", cost, wsjf_weights=(2.0, 1.0)).weights == (2.0, 1.0)
    with pytest.raises(ValueError):
        make_admission("nope")
