from __future__ import annotations

import random

from triage_router.policies.sim.workload import (
    PredictorSpec, RealisticSpec, bucket_prediction, paper_workload, predictor_ready_times,
    realistic_workload,
)


def test_paper_workload_follows_the_paper() -> None:
    w = paper_workload(seed=3, gap=0.5, maxcon=7, gap_num=20)
    assert w == paper_workload(seed=3, gap=0.5, maxcon=7, gap_num=20)  # deterministic
    assert {r.arrival for r in w} <= {i * 0.5 for i in range(20)}
    per_instant = [sum(1 for r in w if r.arrival == i * 0.5) for i in range(20)]
    assert all(0 <= c <= 7 for c in per_instant)
    for r in w:
        assert 0 <= r.priority <= 4 and r.predicted_priority == r.priority
        assert 1 <= r.prompt_tokens <= 499 and 1 <= r.output_tokens <= 499
        assert r.predicted_output_tokens % 50 == 0
        assert abs(r.predicted_output_tokens - r.output_tokens) < 50
        assert r.ready > r.arrival
    assert len({r.request_id for r in w}) == len(w)


def test_bucket_oracle_rounds_down_or_up_half_the_time() -> None:
    rng = random.Random(0)
    picks = [bucket_prediction(rng, 123, 50) for _ in range(1000)]
    assert set(picks) == {100, 150}
    assert 400 < picks.count(150) < 600
    assert {bucket_prediction(rng, 150, 50) for _ in range(20)} == {150}


def test_predictor_batches_of_five_take_1_5_ms_each() -> None:
    ready = predictor_ready_times([0.0] * 7 + [1.0], batch_size=5, batch_seconds=0.0015)
    assert ready[:5] == [0.0015] * 5
    assert ready[5:7] == [0.003, 0.003]  # the second batch starts when the first ends
    assert ready[7] == 1.0015  # an idle predictor starts at once


def test_error_injection_moves_predictions_without_clamping() -> None:
    spec = PredictorSpec(priority_error_rate=0.5, priority_error_distance=3,
                         length_error_rate=0.2, length_error_distance=2)
    clean = paper_workload(seed=1, gap=0.01, maxcon=30)
    noisy = paper_workload(seed=1, gap=0.01, maxcon=30, predictor=spec)
    moved = [(c, n) for c, n in zip(clean, noisy) if c.predicted_priority != n.predicted_priority]
    assert len(moved) == int(len(clean) * 0.5)
    assert all(abs(c.predicted_priority - n.predicted_priority) == 3 for c, n in moved)
    assert any(n.predicted_priority < 0 or n.predicted_priority > 4 for _, n in moved)
    assert all(c.priority == n.priority for c, n in zip(clean, noisy))  # truth untouched
    lengths = [(c, n) for c, n in zip(clean, noisy) if c.predicted_output_tokens != n.predicted_output_tokens]
    assert 0 < len(lengths) <= int(len(clean) * 0.2)


def test_realistic_workload_has_tenants_with_shared_prefixes() -> None:
    spec = RealisticSpec(requests=200, rate=10.0, tenants=3, system_prompt_tokens=500)
    w = realistic_workload(5, spec)
    assert w == realistic_workload(5, spec)
    assert {r.tenant for r in w} == {"t0", "t1", "t2"}
    assert all(r.prefix_id == r.tenant and r.prefix_tokens == 500 < r.prompt_tokens for r in w)
    arrivals = [r.arrival for r in w]
    assert arrivals == sorted(arrivals)
    assert 10 < arrivals[-1] < 40  # about 200 / 10 s
    bursty = realistic_workload(5, RealisticSpec(requests=200, rate=10.0, bursty=True))
    assert [r.arrival for r in bursty] != arrivals
