"""Continuous batching: which sequences run this step, with how many tokens, and who yields.

Each step (`schedule`) does, in order:
1. KV for the most urgent waiting sequence: when it is strictly more urgent than some running
   sequences and its first chunk does not fit in the free blocks, evict among those
   (`triage_router.policies.preemption.plan_evictions`: worst first, and nobody unless that makes room).
2. Running sequences, best first under the ordering: a decode takes one token of the budget, an
   unfinished prefill takes the next chunk that fits. When KV blocks run out, the victim
   (again from policies) is preempted, by swap or recompute as `choose_mode` says.
3. Batch formation, by `triage_router.policies.batching.form_batch`, the code the simulator
   runs too: waiting sequences join in the ordering's order as the admission rule allows, while
   the token budget and the KV pool let each start; when the batch is full, a waiting sequence
   the ordering ranks ahead of the worst member displaces it (a preemption, after which that
   member's tokens this step are given back).
A preempted sequence is pushed back with its original arrival time, so it keeps its place
against later arrivals of its priority.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triage_router.policies.admission import Admission, AdmitAll
from triage_router.policies.batching import form_batch
from triage_router.policies.cost_model import CostModel
from triage_router.policies.ordering import Ordering
from triage_router.policies.preemption import PreemptionMode, choose_mode, choose_victim, plan_evictions
from triage_router.policies.fair_share import fair_share_of
from triage_router.policies.queue import RequestQueue

from triage_router.engine_server.kv_cache import KVCacheManager
from triage_router.engine_server.scheduled import ScheduledSeq
from triage_router.engine_server.sequence import FinishReason, Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[tuple[Sequence, PreemptionMode]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        ordering: Ordering,
        cost: CostModel,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        priority_preemption: bool = True,
        admission: Admission | None = None,
    ) -> None:
        self.kv = kv
        # policies' admission rule (kv-wsjf: KV headroom); AdmitAll fills every free slot.
        self.admission: Admission = admission or AdmitAll()
        self.ordering = ordering
        self.cost = cost
        self.waiting: RequestQueue[Sequence] = RequestQueue(ordering)  # WAITING and SWAPPED
        # A fair share (vtc) is charged for every token scheduled, as the simulator charges it.
        self.fair_share = fair_share_of(ordering)
        # Fair-share counters move with every token, so ranking members by them would displace
        # requests back and forth: fair share decides who joins, never who leaves (as in the
        # simulator).
        self._displaces = priority_preemption and self.fair_share is None
        self.running: list[Sequence] = []
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.priority_preemption = priority_preemption
        self.num_preemptions = {PreemptionMode.SWAP: 0, PreemptionMode.RECOMPUTE: 0}
        self.num_swapped = 0  # kept as a count so that metrics never iterate the queue

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.running) or len(self.waiting) > 0

    def add(self, seq: Sequence, now: float) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.push(seq, now)

    def abort(self, seq: Sequence) -> None:
        """Drop the sequence wherever it is and free all its blocks at once."""
        if seq.is_finished:
            return
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq.request_id)
            self.num_swapped -= seq.status == SequenceStatus.SWAPPED
        self._finish(seq, FinishReason.ABORT)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        self.running.remove(seq)
        self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    # --- the step -----------------------------------------------------------------------

    def schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        self.waiting.drain()
        if self.priority_preemption:
            self._evict_for_urgent(now, out)
        budget = self._schedule_running(now, out)
        self._form_batch(now, budget, out)
        for s in out.scheduled:
            if s.seq.first_scheduled_time is None:
                s.seq.first_scheduled_time = now
        if self.fair_share is not None:
            for s in out.scheduled:
                # One token past a computed prompt is a decode; anything else (a prompt, or a
                # recompute after preemption) is prefill, charged at the prompt weight.
                decode = s.num_tokens == 1 and s.seq.num_computed_tokens >= s.seq.num_prompt_tokens
                self.fair_share.charge(s.seq.tenant, prompt_tokens=0 if decode else s.num_tokens,
                                       output_tokens=1 if decode else 0)
        return out

    def _rank(self, seq: Sequence, now: float) -> tuple:
        return self.ordering.key(seq, now)

    def _evict_for_urgent(self, now: float, out: SchedulerOutput) -> None:
        head = self.waiting.peek(now)
        if head is None:
            return
        # Only sequences strictly less urgent than the head may lose their KV for it, worst
        # (by the ordering) first; and nobody unless that makes room, or the victims would reload
        # next step while the head still waited.
        head_rank = self._rank(head, now)
        candidates = [s for s in self.running if s.priority > head.priority]
        plan = plan_evictions(
            self._blocks_needed(head), self.kv.pool.num_free, candidates,
            blocks=lambda s: sum(1 for b in s.block_table if b.ref_count == 1),
            rank=lambda s: self._rank(s, now), requester_rank=head_rank,
        )
        for victim in plan or []:
            self._preempt(victim, now, out)

    def _blocks_needed(self, head: Sequence) -> int:
        tokens = min(head.num_uncomputed_tokens, self.max_num_batched_tokens)
        need = self.kv.blocks_for(head.num_computed_tokens + tokens)
        if head.status == SequenceStatus.SWAPPED:
            need = max(need, len(head.host_blocks))
        return need

    def _schedule_running(self, now: float, out: SchedulerOutput) -> int:
        budget = self.max_num_batched_tokens
        queue = sorted(self.running, key=lambda s: self._rank(s, now))
        i = 0
        while i < len(queue) and budget > 0:
            seq = queue[i]
            n = min(seq.num_uncomputed_tokens, budget)
            if self.kv.allocate_slots(seq, n):
                out.scheduled.append(ScheduledSeq(seq, n))
                budget -= n
                i += 1
                continue
            # KV shortage: evict among those not yet scheduled this step (seq included), by the
            # ordering's own rank so that we never evict what it would run next.
            victim = choose_victim(queue[i:], self.cost, rank=lambda r: self._rank(r, now))
            assert victim is not None
            queue.remove(victim)
            self._preempt(victim, now, out)
        return budget

    def _form_batch(self, now: float, budget: int, out: SchedulerOutput) -> None:
        left = budget

        def start(seq: Sequence) -> bool:
            nonlocal left
            if left <= 0:
                return False
            n = self._start(seq, left)
            if n == 0:
                return False
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, n))
            left -= n
            return True

        def displace(victim: Sequence) -> None:
            nonlocal left
            for i, s in enumerate(out.scheduled):
                if s.seq is victim:
                    left += out.scheduled.pop(i).num_tokens  # it will not run this step
                    break
            self._preempt(victim, now, out)

        form_batch(
            self.running, self.waiting,
            batch_limit=self.max_num_seqs, admission=self.admission,
            kv_capacity_tokens=self.kv.pool.num_blocks * self.kv.block_size,
            key=lambda s: self._rank(s, now), now=now, start=start,
            displace=displace if self._displaces else None,
        )

    def _start(self, seq: Sequence, budget: int) -> int:
        """Give a waiting sequence its KV for its first chunk; return the chunk's tokens, 0 if
        it cannot start now (it then holds nothing)."""
        if seq.status == SequenceStatus.SWAPPED:
            n = min(seq.num_uncomputed_tokens, budget)
            if not self.kv.can_swap_in(seq, n):
                return 0
            self.kv.swap_in(seq)
            self.num_swapped -= 1
            hit = 0
        else:
            hit = self.kv.match_prefix(seq) if not seq.block_table else 0
            n = min(seq.num_uncomputed_tokens, budget)
        if not self.kv.allocate_slots(seq, n):
            if seq.status != SequenceStatus.SWAPPED:
                # Give the prefix hit back: the sequence must hold nothing while it waits.
                self.kv.unmatch_prefix(seq, hit)
            return 0
        if seq.status != SequenceStatus.SWAPPED and seq.num_preemptions == 0:
            seq.num_cached_tokens = hit
        return n

    def _preempt(self, seq: Sequence, now: float, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        bs = self.kv.block_size
        mode = PreemptionMode.RECOMPUTE
        if self.kv.num_swap_blocks and seq.num_computed_tokens:
            mode = choose_mode(self.cost, seq.num_computed_tokens, host_free_tokens=len(self.kv.host_free) * bs)
        if mode == PreemptionMode.SWAP and self.kv.can_swap_out(seq):
            self.kv.swap_out(seq)
            seq.status = SequenceStatus.SWAPPED
            self.num_swapped += 1
        else:
            mode = PreemptionMode.RECOMPUTE
            self.kv.free(seq)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions[mode] += 1
        out.preempted.append((seq, mode))
        # Re-keyed with its original arrival: no later arrival of its priority overtakes it.
        self.waiting.push(seq, now)
