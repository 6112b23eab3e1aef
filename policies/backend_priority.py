"""The one integer a backend's own scheduler orders by, when that is all it takes.

vLLM's priority scheduler (`--scheduling-policy priority`) runs its waiting queue by the request's
integer `priority`, lower first, then by arrival, and preempts the largest value first. Sending
the level alone leaves each level in arrival order; folding the predicted output length in below
the level makes vLLM itself run urgent work first and then the shortest predicted work, the
semantic-scheduling order, while a level still always beats a less urgent one.
"""

from __future__ import annotations

# Room for the length below each level: a level's value is multiplied by this.
LEVEL_STRIDE = 1_000_000


def composite_priority(level_value: int, predicted_output_tokens: int) -> int:
    """`level_value` (the backend's value for the request's level) dominates; the predicted
    output length, clamped into [0, LEVEL_STRIDE), orders work within one level."""
    return level_value * LEVEL_STRIDE + min(max(predicted_output_tokens, 0), LEVEL_STRIDE - 1)
