"""Admission: whether a waiting request may join the running batch now, not just in what order.

An ordering says who is best; admission says whether letting them in this iteration pays. The
engine's scheduler and the simulator ask it before they fill a free batch slot. Two rules, both
pure functions of the batch's state:

- **Prefill grouping** (`group`): when the iteration that admits a request is a prefill
  iteration that stalls every decoder (the paper's engine, and any engine that does not mix
  prefill into decode steps), filling slots one at a time stalls the batch once per arrival.
  Opening the batch only when `group` slots are free (or fewer requests wait, or the batch is
  empty) prefills them together: one iteration costing the longest prefill instead of several.
- **KV headroom** (`horizon_tokens`): admit a request only if the batch's KV still fits once every
  member ranked ahead of it (and the newcomer) has grown by its predicted output, capped at
  `horizon_tokens`. Members ranked behind it do not count: preemption may evict them for it
  (`plan_evictions`), so a P0 is never held out by the memory of bulk work. A
  request admitted into memory that the members are about to need is evicted again within a few
  steps: a swap or a recompute for nothing. Reserving the whole predicted output instead is too
  cautious (a member holds on average half of it) and measured worse than no rule at all.
  A request that does not fit is skipped and the next one in order is tried, so small requests
  fill the memory that a large one cannot use yet. An empty batch always admits, so a request
  larger than the budget still runs (and preemption handles it).

`AdmitAll` is the rule every engine had before: any free slot is filled by the best waiting request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from triage_router.policies.request import RequestState, context_tokens, remaining_output_tokens


class Admission(Protocol):
    def opens(self, free_slots: int, waiting: int, running: int) -> bool:
        """May waiting requests fill the `free_slots` free batch slots this iteration?"""
        ...

    def fits(self, req: RequestState, members: Iterable[RequestState], kv_capacity_tokens: int) -> bool:
        """May `req` join a batch on a replica holding `kv_capacity_tokens`? `members` are the
        batch members ranked ahead of `req` (the ones it may not evict)."""
        ...


class AdmitAll:
    """Fill every free slot with the best waiting request, whatever memory it will need."""

    def opens(self, free_slots: int, waiting: int, running: int) -> bool:
        return free_slots > 0 and waiting > 0

    def fits(self, req: RequestState, members: Iterable[RequestState], kv_capacity_tokens: int) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class KvHeadroom:
    """Prefill grouping plus KV headroom (module docstring). Defaults measured in the simulator."""

    horizon_tokens: int = 64
    group: int = 2

    def __post_init__(self) -> None:
        if self.horizon_tokens < 1 or self.group < 1:
            raise ValueError("horizon_tokens and group must be at least 1")

    def reserved_tokens(self, req: RequestState) -> int:
        """KV the request will hold within the horizon: its context plus the predicted output
        still to come, at least one token (the next step's) and at most `horizon_tokens`."""
        return context_tokens(req) + min(max(remaining_output_tokens(req), 1), self.horizon_tokens)

    def opens(self, free_slots: int, waiting: int, running: int) -> bool:
        if free_slots <= 0 or waiting <= 0:
            return False
        return running == 0 or free_slots >= min(self.group, waiting)

    def fits(self, req: RequestState, members: Iterable[RequestState], kv_capacity_tokens: int) -> bool:
        reserved = [self.reserved_tokens(m) for m in members]
        if not reserved:
            return True
        return sum(reserved) + self.reserved_tokens(req) <= kv_capacity_tokens
