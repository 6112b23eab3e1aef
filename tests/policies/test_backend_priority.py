from __future__ import annotations

from triage_router.policies.backend_priority import LEVEL_STRIDE, composite_priority


def test_the_level_dominates_and_the_predicted_length_orders_within_it() -> None:
    urgent_long = composite_priority(0, 5_000)
    urgent_short = composite_priority(0, 10)
    normal_short = composite_priority(2, 0)
    assert urgent_short < urgent_long < normal_short
    # Negative levels (a priority_map may use them) keep the same order.
    assert composite_priority(-1, LEVEL_STRIDE * 5) < composite_priority(0, 0)


def test_lengths_are_clamped_so_a_level_never_spills_into_the_next() -> None:
    assert composite_priority(1, 10 * LEVEL_STRIDE) == 2 * LEVEL_STRIDE - 1
    assert composite_priority(1, -3) == LEVEL_STRIDE
