"""Scheduling on a tiny random-weight model: chunking, preemption, priorities, aborts.

Every scenario also checks the tokens against the reference: preemption and chunking must
never change what greedy decoding produces.
"""

from __future__ import annotations

import pytest
from triage_router.policies.preemption import PreemptionMode

from triage_router.engine_server.sequence import SamplingParams, SequenceStatus
from tests.engine_server.conftest import reference_greedy, tiny_engine

LONG = list(range(3, 50))  # 47 tokens
SHORT = [5, 17, 33, 9, 60, 2, 41]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


def drain(engine) -> None:
    while engine.has_work():
        engine.step()


def test_chunked_prefill_shares_steps_with_decodes(tiny_llama, tiny_hf):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_batched_tokens=16)
    short = engine.add_request("short", SHORT, greedy(8))
    engine.step()  # the short prompt is prefilled whole
    long = engine.add_request("long", LONG, greedy(8))
    chunks = []
    while long.num_output_tokens == 0:
        engine.step()
        sched = engine.last_schedule
        assert sched is not None and sched.num_tokens <= 16
        sizes = {s.seq.request_id: s.num_tokens for s in sched.scheduled}
        assert sizes.get("short") == 1  # the decode is never stalled by the long prompt
        chunks.append(sizes["long"])
    assert chunks == [15, 15, 15, 2]
    drain(engine)
    assert short.output_token_ids == reference_greedy(tiny_hf, SHORT, 8)
    assert long.output_token_ids == reference_greedy(tiny_hf, LONG, 8)


def _kv_shortage(tiny_llama, tiny_hf, num_swap_blocks: int) -> dict[PreemptionMode, int]:
    # 14 blocks of 4 tokens: each sequence needs 4-6 blocks by the end, three cannot all fit.
    # PJF admits whatever fits now; the default's KV headroom would avoid the shortage altogether.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=14, num_swap_blocks=num_swap_blocks, ordering="pjf")
    prompts = [SHORT, [7] * 9, [11, 12, 13, 14, 15]]
    seqs = [engine.add_request(f"r{i}", p, greedy(14)) for i, p in enumerate(prompts)]
    drain(engine)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks
    assert len(engine.kv.host_free) == num_swap_blocks
    for seq, prompt in zip(seqs, prompts):
        assert seq.output_token_ids == reference_greedy(tiny_hf, prompt, 14)
    return engine.scheduler.num_preemptions


def test_preemption_by_recompute_resumes_exactly(tiny_llama, tiny_hf):
    modes = _kv_shortage(tiny_llama, tiny_hf, num_swap_blocks=0)
    assert modes[PreemptionMode.RECOMPUTE] > 0 and modes[PreemptionMode.SWAP] == 0


def test_preemption_by_swap_resumes_exactly(tiny_llama, tiny_hf):
    modes = _kv_shortage(tiny_llama, tiny_hf, num_swap_blocks=32)
    assert modes[PreemptionMode.SWAP] > 0


def test_urgent_request_preempts_a_full_batch(tiny_llama, tiny_hf):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_seqs=2, ordering="pjf")
    bulk = [engine.add_request(f"bulk{i}", SHORT, greedy(12), priority=4) for i in range(2)]
    engine.step()
    engine.step()
    urgent = engine.add_request("urgent", [9, 8, 7, 6], greedy(6), priority=0)
    engine.step()  # the very next step admits it: one bulk sequence yields its slot
    assert urgent.status == SequenceStatus.RUNNING and urgent.num_output_tokens == 1
    victims = [s for s in bulk if s.status != SequenceStatus.RUNNING]
    assert len(victims) == 1 and victims[0].num_preemptions == 1
    drain(engine)
    assert urgent.output_token_ids == reference_greedy(tiny_hf, [9, 8, 7, 6], 6)
    for s in bulk:
        assert s.output_token_ids == reference_greedy(tiny_hf, SHORT, 12)


def test_equal_priority_never_preempts(tiny_llama):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_seqs=2, ordering="pjf")
    running = [engine.add_request(f"a{i}", SHORT, greedy(6), priority=2) for i in range(2)]
    engine.step()
    late = engine.add_request("late", SHORT, greedy(6), priority=2)
    engine.step()
    assert all(s.status == SequenceStatus.RUNNING for s in running)
    assert late.status == SequenceStatus.WAITING
    drain(engine)


def test_a_much_shorter_request_of_the_same_priority_displaces_under_semantic(tiny_llama, tiny_hf):
    # policies.batching: the batch holds the best max_num_seqs under the ordering. Semantic
    # ranks a P2 with 2 tokens to go ahead of a P2 with 30 still to come.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_seqs=1, ordering="semantic")
    long = engine.add_request("long", SHORT, greedy(32), priority=2)
    engine.step()
    engine.step()
    short = engine.add_request("short", SHORT, greedy(2), priority=2)
    engine.step()
    assert short.status == SequenceStatus.RUNNING and long.num_preemptions == 1
    drain(engine)
    assert long.output_token_ids == reference_greedy(tiny_hf, SHORT, 32)


def test_preempted_request_keeps_its_place_against_later_arrivals(tiny_llama):
    # vLLM #41951: a preempted request must not fall behind later arrivals of its priority.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_seqs=1, ordering="pjf")
    early = engine.add_request("early", SHORT, greedy(8), priority=3, arrival_time=0.0)
    engine.step()
    engine.add_request("urgent", SHORT, greedy(2), priority=0, arrival_time=1.0)
    later = engine.add_request("later", SHORT, greedy(8), priority=3, arrival_time=2.0)
    engine.step()
    assert early.status != SequenceStatus.RUNNING and early.num_preemptions == 1
    drain_order = []
    while engine.has_work():
        for out in engine.step():
            if out.finished:
                drain_order.append(out.request_id)
    assert drain_order == ["urgent", "early", "later"]
    assert later.num_preemptions == 0


def test_abort_frees_every_block_at_once(tiny_llama):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, num_swap_blocks=16)
    seqs = [engine.add_request(f"r{i}", LONG, greedy(20)) for i in range(3)]
    for _ in range(4):
        engine.step()
    assert engine.kv.pool.num_free < engine.kv.pool.num_blocks
    for s in seqs:
        out = engine.abort(s.request_id)
        assert out is not None and out.finished and out.finish_reason == "abort"
    assert not engine.has_work()
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


def test_prefix_cache_hit_produces_the_same_tokens(tiny_llama, tiny_hf):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64)
    first = engine.generate([LONG], greedy(6))[0]
    seq = engine.add_request("again", LONG, greedy(6))
    drain(engine)
    assert seq.num_cached_tokens == 44  # 11 full blocks; the 47th token is recomputed
    assert seq.output_token_ids == first == reference_greedy(tiny_hf, LONG, 6)
    assert engine.kv.prefix_hits == 44


def test_no_eviction_when_evicting_every_candidate_would_not_make_room(tiny_llama):
    # policies' rule: otherwise the victim returns next step while the head still waits.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=16, ordering="pjf")
    big = engine.add_request("big", LONG[:40], greedy(4), priority=0)  # 11 blocks with its first token
    small = engine.add_request("small", SHORT, greedy(4), priority=4)  # 2 blocks
    engine.step()
    head = engine.add_request("head", [8] * 30, greedy(4), priority=1)  # needs 8 > 3 free + 2
    engine.step()
    assert small.num_preemptions == 0 and small.status == SequenceStatus.RUNNING
    assert head.status == SequenceStatus.WAITING
    drain(engine)
    assert big.is_finished and head.is_finished
    # The head was looked up in the prefix cache each step it stayed blocked; only the
    # admission that stuck counts.
    assert engine.kv.prefix_queries == 40 + 7 + 30


@pytest.mark.parametrize("ordering", ["fcfs", "semantic+aging", "wsjf+aging", "kv-wsjf+aging", "default"])
def test_every_policies_ordering_drives_the_engine(tiny_llama, tiny_hf, ordering):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=16, max_num_seqs=2, ordering=ordering)
    prompts = [SHORT, [7] * 9, [11, 12, 13, 14, 15]]
    seqs = [engine.add_request(f"r{i}", p, greedy(10), priority=i) for i, p in enumerate(prompts)]
    drain(engine)
    for seq, prompt in zip(seqs, prompts):
        assert seq.output_token_ids == reference_greedy(tiny_hf, prompt, 10)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


@pytest.mark.parametrize(("ordering", "admitted"), [("fcfs", True), ("kv-wsjf+aging", False)])
def test_kv_headroom_admission_holds_back_what_the_batch_will_need(tiny_llama, ordering, admitted):
    # 64 tokens of KV. The running P0 request will hold 40 + 20 = 60 tokens within policies'
    # horizon; a P4 newcomer, ranked behind it, reserving 7 + 10 more does not fit under
    # KvHeadroom, although blocks are free right now. AdmitAll (fcfs) lets it in.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=16, ordering=ordering)
    engine.add_request("big", LONG[:40], greedy(20), priority=0)
    engine.step()
    newcomer = engine.add_request("new", SHORT, greedy(10), priority=4)
    engine.step()
    assert (newcomer.status == SequenceStatus.RUNNING) is admitted
    drain(engine)
    assert newcomer.is_finished


def test_vtc_charges_every_scheduled_token_so_a_light_tenant_is_not_starved(tiny_llama):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=64, max_num_seqs=1, ordering="vtc")
    heavy = [engine.add_request(f"h{i}", SHORT, greedy(4), tenant="heavy") for i in range(3)]
    light = engine.add_request("light", SHORT, greedy(4), tenant="light")
    order = []
    while engine.has_work():
        engine.step()
        for seq in [*heavy, light]:
            if seq.is_finished and seq.request_id not in order:
                order.append(seq.request_id)
    # Uncharged, both counters stay 0 and "heavy" (first by name) would run all three first.
    assert order.index("light") < 2
    fair = engine.scheduler.fair_share
    assert fair is not None and fair.counter("heavy") > fair.counter("light") > 0
