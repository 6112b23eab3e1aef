"""Continuous batching: which sequences run this step, with how many tokens, and who yields.

Each step (`schedule`) does, in order:
1. Priority preemption: when the most urgent waiting sequence cannot start because the batch
   is full, evict strictly less urgent sequences: for KV blocks, `triage_router.policies.preemption.
   plan_evictions` (worst first, and nobody unless that makes room); for a sequence slot, the
   `choose_victim` among them.
2. Running sequences, most urgent first: a decode takes one token of the budget, an
   unfinished prefill takes the next chunk that fits. When KV blocks run out, the victim
   (again from policies) is preempted, by swap or recompute as `choose_mode` says.
3. Waiting sequences, in the configured `policies` ordering, while the token budget, the
   sequence slots and the KV pool allow. The head blocks the queue (no overtaking), so the
   ordering is honoured exactly.
A preempted sequence is pushed back with its original arrival time, so it keeps its place
against later arrivals of its priority.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triage_router.policies.admission import Admission, AdmitAll
from triage_router.policies.cost_model import CostModel
from triage_router.policies.ordering import Ordering
from triage_router.policies.preemption import PreemptionMode, choose_mode, choose_victim, plan_evictions, victim_rank
from triage_router.policies.fair_share import fair_share_of
from triage_router.policies.queue import RequestQueue

from triage_router.engine_server.kv_cache import KVCacheManager
from triage_router.engine_server.model_runner import ScheduledSeq
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
        # Running sequences are ranked by the ordering's base key (no aging: aging is about
        # time in the queue).
        self.rank_ordering: Ordering = getattr(ordering, "inner", ordering)
        self.cost = cost
        self.waiting: RequestQueue[Sequence] = RequestQueue(ordering)  # WAITING and SWAPPED
        # A fair share (vtc) is charged for every token scheduled, as the simulator charges it.
        self.fair_share = fair_share_of(ordering)
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
            self._preempt_for_urgent(now, out)
        budget = self._schedule_running(now, out)
        self._admit_waiting(now, budget, out)
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

    def _preempt_for_urgent(self, now: float, out: SchedulerOutput) -> None:
        head = self.waiting.peek(now)
        if head is None or not self._batch_full_for(head):
            return

        # Victims must be strictly less urgent than the head; among them, policies' victim
        # order (lowest priority, then most remaining work). (p, inf) < (q, ...) iff p < q.
        def rank(s: Sequence) -> tuple:
            return victim_rank(s, self.cost)

        head_rank = (head.priority, float("inf"))
        # KV: policies' plan evicts only lower-ranked sequences, and only if that makes room;
        # otherwise nobody (the victims would reload next step while the head still waits).
        plan = plan_evictions(
            self._blocks_needed(head), self.kv.pool.num_free, self.running,
            blocks=lambda s: sum(1 for b in s.block_table if b.ref_count == 1), rank=rank, requester_rank=head_rank,
        )
        if plan is None:
            return
        if not plan and len(self.running) >= self.max_num_seqs:
            # KV has room but every slot is taken: free exactly one slot.
            victim = choose_victim([s for s in self.running if head_rank < rank(s)], self.cost)
            if victim is None:
                return
            plan = [victim]
        for victim in plan:
            self._preempt(victim, now, out)

    def _blocks_needed(self, head: Sequence) -> int:
        tokens = min(head.num_uncomputed_tokens, self.max_num_batched_tokens)
        need = self.kv.blocks_for(head.num_computed_tokens + tokens)
        if head.status == SequenceStatus.SWAPPED:
            need = max(need, len(head.host_blocks))
        return need

    def _batch_full_for(self, head: Sequence) -> bool:
        if len(self.running) >= self.max_num_seqs:
            return True
        # Conservative: ignores a possible prefix hit, which only makes room.
        return self._blocks_needed(head) > self.kv.pool.num_free

    def _schedule_running(self, now: float, out: SchedulerOutput) -> int:
        budget = self.max_num_batched_tokens
        queue = sorted(self.running, key=lambda s: self.rank_ordering.key(s, now))
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
            victim = choose_victim(queue[i:], self.cost, rank=lambda r: self.rank_ordering.key(r, now))
            assert victim is not None
            queue.remove(victim)
            self._preempt(victim, now, out)
        return budget

    def _admit_waiting(self, now: float, budget: int, out: SchedulerOutput) -> None:
        capacity = self.kv.pool.num_blocks * self.kv.block_size
        while budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting.peek(now)
            if seq is None:
                return
            free_slots = self.max_num_seqs - len(self.running)
            if not self.admission.opens(free_slots, len(self.waiting), len(self.running)):
                return
            # Members it may not evict: those at least as urgent. If the headroom rule says no,
            # the head waits; unlike the simulator we do not let later ones overtake it.
            ahead = [s for s in self.running if s.priority <= seq.priority]
            if not self.admission.fits(seq, ahead, capacity):
                return
            if seq.status == SequenceStatus.SWAPPED:
                n = min(seq.num_uncomputed_tokens, budget)
                if not self.kv.can_swap_in(seq, n):
                    return
                self.kv.swap_in(seq)
                self.num_swapped -= 1
            else:
                hit = self.kv.match_prefix(seq) if not seq.block_table else 0
                n = min(seq.num_uncomputed_tokens, budget)
            if not self.kv.allocate_slots(seq, n):
                if seq.status != SequenceStatus.SWAPPED:
                    # Give the prefix hit back: the sequence must hold nothing while it waits.
                    self.kv.unmatch_prefix(seq, hit)
                return
            if seq.status != SequenceStatus.SWAPPED and seq.num_preemptions == 0:
                seq.num_cached_tokens = hit
            self.waiting.pop(now)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, n))
            budget -= n

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
