"""Seconds a request still needs, from the paper's fitted cost model.

prefill(p)      = pc1·p² + pc2·p
decode(p, o)    = dc1·(o²/2 + p·o + o/2) + dc2·o      (o tokens after a context of p)
one decode step = dc1·(c + 1) + dc2                    (the token after a context of c)
swap reload     = swap_s_per_token · tokens

decode(p, o) is exactly the sum of o decode steps at contexts p, p+1, ..., p+o-1, so a request
that has run k steps has decode(p+k, o-k) left: remaining time decreases as it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from triage_router.policies.request import RequestState, context_tokens, remaining_output_tokens


@dataclass(frozen=True, slots=True)
class CostModel:
    dc1: float
    dc2: float
    pc1: float
    pc2: float
    swap_s_per_token: float

    def prefill_seconds(self, tokens: int) -> float:
        return self.pc1 * tokens * tokens + self.pc2 * tokens

    def partial_prefill_seconds(self, total: int, done: int) -> float:
        """Cost of computing tokens done..total of a prefill (chunked prefill, resumed recompute)."""
        return self.prefill_seconds(total) - self.prefill_seconds(min(done, total))

    def decode_seconds(self, context: int, tokens: int) -> float:
        o = tokens
        return self.dc1 * (o * o / 2 + context * o + o / 2) + self.dc2 * o

    def decode_step_seconds(self, context: int) -> float:
        return self.dc1 * (context + 1) + self.dc2

    def swap_seconds(self, tokens: int) -> float:
        return self.swap_s_per_token * tokens

    def recompute_seconds(self, tokens: int) -> float:
        return self.prefill_seconds(tokens)

    def remaining_seconds(self, req: RequestState) -> float:
        """Predicted seconds until `req` completes if it ran alone from now: the prefill still
        owed (fresh, chunked or after a recompute preemption), the reload of swapped KV, and
        the decode of the predicted remaining output."""
        ctx = context_tokens(req)
        prefill = self.partial_prefill_seconds(ctx, req.computed_tokens)
        reload = self.swap_seconds(req.swapped_tokens)
        return prefill + reload + self.decode_seconds(ctx, remaining_output_tokens(req))
