from __future__ import annotations

import pytest

from triage_router.policies.cost_model import CostModel
from triage_router.policies.request import Request

SIMPLE = CostModel(dc1=0.01, dc2=1.0, pc1=0.001, pc2=0.1, swap_s_per_token=0.5)


def test_prefill_and_decode_formulas() -> None:
    assert SIMPLE.prefill_seconds(10) == pytest.approx(0.001 * 100 + 0.1 * 10)
    # dc1·(o²/2 + p·o + o/2) + dc2·o with p=4, o=2: 0.01·(2 + 8 + 1) + 2
    assert SIMPLE.decode_seconds(4, 2) == pytest.approx(0.11 + 2.0)


def test_decode_is_the_sum_of_its_steps() -> None:
    steps = sum(SIMPLE.decode_step_seconds(7 + i) for i in range(5))
    assert steps == pytest.approx(SIMPLE.decode_seconds(7, 5))


def test_remaining_seconds_decreases_as_the_request_runs() -> None:
    r = Request("a", 0, 0.0, prompt_tokens=10, predicted_output_tokens=3)
    fresh = SIMPLE.remaining_seconds(r)
    assert fresh == pytest.approx(SIMPLE.prefill_seconds(10) + SIMPLE.decode_seconds(10, 3))
    r.computed_tokens = 10
    after_prefill = SIMPLE.remaining_seconds(r)
    r.output_tokens, r.computed_tokens = 1, 11
    after_one = SIMPLE.remaining_seconds(r)
    assert fresh > after_prefill > after_one
    assert after_one == pytest.approx(SIMPLE.decode_seconds(11, 2))


def test_swapped_and_recomputed_requests_owe_their_reload() -> None:
    r = Request("a", 0, 0.0, prompt_tokens=10, predicted_output_tokens=3,
                output_tokens=1, computed_tokens=11, swapped_tokens=11)
    assert SIMPLE.remaining_seconds(r) == pytest.approx(11 * 0.5 + SIMPLE.decode_seconds(11, 2))
    r.computed_tokens, r.swapped_tokens = 0, 0  # recompute: the whole context again
    assert SIMPLE.remaining_seconds(r) == pytest.approx(
        SIMPLE.prefill_seconds(11) + SIMPLE.decode_seconds(11, 2))


def test_outliving_the_prediction_never_gives_negative_work() -> None:
    r = Request("a", 0, 0.0, prompt_tokens=5, predicted_output_tokens=2,
                output_tokens=9, computed_tokens=14)
    assert SIMPLE.remaining_seconds(r) == 0.0
