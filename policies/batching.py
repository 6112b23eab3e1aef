"""Batch formation: which waiting requests join a replica's running batch this iteration, and
which running request a more urgent one displaces. The engine's scheduler and the simulator both
call `form_batch`; they differ only in what joining and leaving cost them (the callbacks).

One iteration's formation:

1. If slots are free, the admission rule decides whether the batch opens now at all
   (`Admission.opens`: prefill grouping may keep a slot empty until several requests can
   prefill together). Once open, every free slot may be filled.
2. Waiting requests are taken in the ordering's order. One that does not fit beside the members
   ranked ahead of it (`Admission.fits`: KV headroom) is skipped, and the next one is tried, so
   small requests use memory a large one cannot use yet. At most `batch_limit` skips per
   iteration; skipped requests go back to the queue.
3. When the batch is full, the best waiting request displaces the worst-ranked member if the
   ordering ranks it ahead of that member: the batch holds the best `batch_limit` requests.
   Under FCFS nobody is ever displaced; under the semantic orderings a shorter request of the
   same priority displaces a longer one (preemptive SRPT within a priority, which the paper's
   comparison assumes: measured 2026-12-07 in paper mode, allowing displacement only by a
   strictly more urgent request made semantic's P0 worse than PJF's in three of nine cells).
4. `start(request)` asks the caller whether the request can start now (an engine: token budget
   and KV blocks; the simulator always can). A refusal ends the formation with the request still
   waiting: the head is not overtaken for resources, only for headroom (step 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from triage_router.policies.admission import Admission
from triage_router.policies.ordering import Key
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import RequestState

R = TypeVar("R", bound=RequestState)


@dataclass
class BatchChange(Generic[R]):
    admitted: list[R] = field(default_factory=list)  # in the order they joined
    displaced: list[R] = field(default_factory=list)


def displacement_victim(candidate_key: Key, members: list[R], key: Callable[[R], Key]) -> R | None:
    """The member a candidate keyed `candidate_key` displaces from a full batch (rule 3), or None."""
    if not members:
        return None
    worst = max(members, key=key)
    return worst if candidate_key < key(worst) else None


def form_batch(
    members: list[R],
    queue: RequestQueue[R],
    *,
    batch_limit: int,
    admission: Admission,
    kv_capacity_tokens: int,
    key: Callable[[R], Key],
    now: float,
    start: Callable[[R], bool],
    displace: Callable[[R], None] | None,
) -> BatchChange[R]:
    """Run one formation (module docstring) over the running `members` and the waiting `queue`.

    The queue loses the admitted requests. The caller moves requests between its queue and its
    batch in the callbacks: `start(request)` admits (or refuses) one, `displace(victim)` takes
    one out, before the displacing request's `start`. A request admitted earlier in the same
    formation may be displaced again. `key` ranks members and candidates alike. Pass
    `displace=None` for a replica that never displaces.
    """
    change: BatchChange[R] = BatchChange()
    batch = list(members)
    keys = {id(m): key(m) for m in batch}
    free = batch_limit - len(batch)
    if free > 0 and not admission.opens(free, len(queue), len(batch)):
        return change
    skipped: list[R] = []
    while len(queue):
        candidate = queue.peek(now)
        assert candidate is not None
        candidate_key = key(candidate)
        victim: R | None = None
        if len(batch) < batch_limit:
            ahead = [m for m in batch if keys[id(m)] < candidate_key]
            if not admission.fits(candidate, ahead, kv_capacity_tokens):
                skipped.append(queue.pop(now))
                if len(skipped) >= batch_limit:
                    break
                continue
        elif displace is not None:
            victim = displacement_victim(candidate_key, batch, lambda m: keys[id(m)])
            if victim is None:
                break
            batch.remove(victim)
            del keys[id(victim)]
            change.displaced.append(victim)
            displace(victim)
        else:
            break
        if not start(candidate):
            break
        queue.pop(now)
        batch.append(candidate)
        keys[id(candidate)] = candidate_key
        change.admitted.append(candidate)
    for s in skipped:
        queue.push(s, now)
    return change
