"""One serving replica: continuous batching over a KV block budget, with preemption.

Each `step(now)` is one model iteration:

1. Form the batch with `triage_router.policies.batching.form_batch`, the engine's own rule:
   waiting requests fill free slots in the ordering's order as the admission rule allows, and
   a strictly more urgent one displaces the worst member it ranks ahead of. A displaced member
   goes back to the queue and keeps its KV until memory is needed ("paused"); the engine
   preempts it instead (a cost, not a decision, differs).
2. Pick who works. Paper mode follows the paper: if any batch member owes prefill (a fresh
   prompt, a recompute, or a swapped-out KV to reload), the iteration is a prefill iteration
   for those; otherwise every member decodes one token. Mixed mode (realistic) runs prefill
   chunks and decodes in the same iteration.
3. Allocate KV blocks, best member first. When blocks run out, evict a victim: a paused request
   first, else a batch member ranked after the one being served; the victim is the worst under
   the ordering (for Semantic that is exactly lowest priority, then longest remaining), and
   `choose_mode` decides swap or recompute. An evicted batch member stays in the batch and
   waits for memory: only requests ranked below the requester are ever evicted and batch
   membership only changes at step 1, so evictions cannot cycle.
4. Cost: paper mode charges the max over the working members (prefill + reload, or one decode
   step). Mixed mode charges the sum of prefill work plus one batched decode step,
   dc2·(1 + γ·(n−1)) + dc1·Σ(context+1): weights are read once per iteration, KV per token.

Invariants: blocks in use + free blocks = capacity; a request is in exactly one of running,
queue; only requests with resident KV hold blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from triage_router.policies.admission import Admission, AdmitAll
from triage_router.policies.batching import form_batch
from triage_router.policies.catalog import AnyOrdering
from triage_router.policies.cost_model import CostModel
from triage_router.policies.fair_share import fair_share_of
from triage_router.policies.ordering import Key
from triage_router.policies.preemption import PreemptionMode, choose_mode, plan_evictions
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import context_tokens, remaining_tokens
from triage_router.policies.sim.workload import SimRequest


class SimSequence:
    """A request inside the simulator; it satisfies `triage_router.policies.request.RequestState`."""

    __slots__ = (
        "spec", "request_id", "priority", "arrival", "prompt_tokens", "predicted_output_tokens",
        "output_tokens", "computed_tokens", "swapped_tokens", "app", "tenant", "blocks",
        "first_scheduled", "first_token", "finished", "preemptions", "replica",
    )

    def __init__(self, spec: SimRequest) -> None:
        self.spec = spec
        self.request_id = spec.request_id
        self.priority = spec.predicted_priority  # the scheduler sees the prediction only
        self.arrival = spec.arrival
        self.prompt_tokens = spec.prompt_tokens
        self.predicted_output_tokens = spec.predicted_output_tokens
        self.output_tokens = 0
        self.computed_tokens = 0
        self.swapped_tokens = 0
        self.app = spec.app
        self.tenant = spec.tenant
        self.blocks = 0  # KV blocks held on the GPU
        self.first_scheduled: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self.preemptions = 0
        self.replica = ""

    @property
    def resident_tokens(self) -> int:
        return self.computed_tokens - self.swapped_tokens

    def owes_prefill(self) -> bool:
        return self.swapped_tokens > 0 or self.computed_tokens < context_tokens(self)


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    kv_blocks: int
    batch_limit: int = 16
    block_tokens: int = 32
    mixed: bool = False  # prefill and decode in one iteration (realistic mode)
    batch_overhead: float = 0.0  # γ: extra decode cost per additional batch member
    prefill_chunk: int | None = None  # prefill tokens per iteration in mixed mode
    prefix_cache_entries: int = 0  # shared prompts a replica remembers (LRU)
    preemptive: bool = True  # may a better waiting request displace a running one


@dataclass(slots=True)
class ReplicaStats:
    iterations: int = 0
    batch_members: int = 0  # summed over iterations: the mean batch size's numerator
    preemptions: int = 0
    swaps: int = 0
    recomputes: int = 0
    prefix_hits: int = 0


class Replica:
    def __init__(
        self, name: str, config: ReplicaConfig, cost: CostModel, ordering: AnyOrdering,
        admission: Admission | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.cost = cost
        self.ordering = ordering
        self.admission: Admission = admission or AdmitAll()
        self.queue: RequestQueue[SimSequence] = RequestQueue(ordering)
        self.running: list[SimSequence] = []
        self.free_blocks = config.kv_blocks
        self.paused: dict[str, SimSequence] = {}  # queued requests still holding KV blocks
        self.prefixes: OrderedDict[str, None] = OrderedDict()
        self.stats = ReplicaStats()
        self._fair = fair_share_of(ordering)
        # VTC orders admissions. Its counters move with every token served, so re-ranking the
        # running batch by them each iteration displaces requests back and forth (measured:
        # 3x lower throughput). Fair share decides who is admitted, never who is displaced.
        self._displace = config.preemptive and self._fair is None

    # -- what placement and rebalancing see -------------------------------------------------
    @property
    def load(self) -> int:
        return len(self.running) + len(self.queue)

    def in_flight_tokens(self) -> int:
        return sum(remaining_tokens(s) for s in self.running) + sum(remaining_tokens(s) for s in self.queue)

    def prefix_match_tokens(self, spec: SimRequest) -> int:
        return spec.prefix_tokens if spec.prefix_id and spec.prefix_id in self.prefixes else 0

    def has_work(self) -> bool:
        return bool(self.running) or len(self.queue) > 0

    # -- arrivals -----------------------------------------------------------------------------
    def enqueue(self, seq: SimSequence, now: float) -> None:
        seq.replica = self.name
        hit = self.prefix_match_tokens(seq.spec)
        if hit and seq.computed_tokens == 0:
            # the shared prompt's KV is reused: only the rest must be prefilled
            seq.computed_tokens = min(hit, seq.prompt_tokens - 1)
            self.prefixes.move_to_end(seq.spec.prefix_id)
            self.stats.prefix_hits += 1
        self.queue.push(seq, now)

    def withdraw(self, request_id: str) -> SimSequence | None:
        """Take a waiting request out for migration. Refuses one whose KV lives here (resident
        or swapped to this host); a prefix-cache credit does not travel: the target replica
        grants its own on `enqueue`."""
        s = self.queue.peek_id(request_id)
        if s is None or s.blocks or s.swapped_tokens:
            return None
        self.queue.remove(request_id)
        s.computed_tokens = 0
        return s

    # -- one iteration ------------------------------------------------------------------------
    def step(self, now: float) -> tuple[float, list[SimSequence]]:
        """Run one iteration starting at `now`; return its duration and who finished.
        Effects are applied now; the caller stamps them at now + duration."""
        self.queue.drain()
        keys = self._form_batch(now)
        batch = sorted(self.running, key=lambda s: keys[s.request_id])
        if self.config.mixed:
            workers = self._allocate(batch, batch, keys, now)
        else:
            prefilling = [s for s in batch if s.owes_prefill()]
            workers = self._allocate(prefilling or batch, batch, keys, now)
            if prefilling and not workers:
                # better-ranked decoders hold the memory no prefill can take: decode instead
                decoding = [s for s in batch if not s.owes_prefill()]
                workers = self._allocate(decoding, batch, keys, now)
        return self._execute(workers, now)

    def _key(self, s: SimSequence, now: float) -> Key:
        return self.ordering.key(s, now)

    def _form_batch(self, now: float) -> dict[str, Key]:
        def start(s: SimSequence) -> bool:
            self.paused.pop(s.request_id, None)  # its KV is in the batch again
            self.running.append(s)
            return True

        def displace(victim: SimSequence) -> None:
            self.running.remove(victim)
            self._requeue(victim, now)

        form_batch(
            self.running, self.queue,
            batch_limit=self.config.batch_limit, admission=self.admission,
            kv_capacity_tokens=self.config.kv_blocks * self.config.block_tokens,
            key=lambda s: self._key(s, now), now=now,
            start=start, displace=displace if self._displace else None,
        )
        self.queue.drain()
        return {s.request_id: self._key(s, now) for s in self.running}

    def _requeue(self, s: SimSequence, now: float) -> None:
        if s.blocks:
            self.paused[s.request_id] = s
        self.queue.push(s, now)

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_tokens)

    def _target_tokens(self, s: SimSequence, chunk_left: int | None) -> int:
        ctx = context_tokens(s)
        if not s.owes_prefill():
            return ctx + 1  # room for the token this step produces
        if chunk_left is None:
            return ctx
        return min(ctx, s.computed_tokens + chunk_left)

    def _allocate(
        self, workers: list[SimSequence], batch: list[SimSequence], keys: dict[str, Key], now: float
    ) -> list[SimSequence]:
        granted: list[SimSequence] = []
        evicted: set[str] = set()
        chunk_left = self.config.prefill_chunk if self.config.mixed else None

        def rank(r: SimSequence) -> tuple[bool, Key]:
            # paused requests sit outside the batch, so they rank below every member
            paused = r.request_id in self.paused
            return (paused, self._key(r, now) if paused else keys[r.request_id])

        for s in workers:
            if s.request_id in evicted:
                continue
            if chunk_left is not None and chunk_left <= 0 and s.owes_prefill() and not s.swapped_tokens:
                continue  # this iteration's prefill budget is spent
            need = self._blocks_for(self._target_tokens(s, chunk_left)) - s.blocks
            if need > self.config.kv_blocks:
                raise ValueError(f"{s.request_id} needs more KV than the replica holds")
            candidates = list(self.paused.values()) + [
                b for b in batch if b.request_id not in evicted and b is not s]
            plan = plan_evictions(need, self.free_blocks, candidates, lambda r: r.blocks, rank, rank(s))
            if plan is None:
                continue  # evicting everyone below s would not make room: s waits
            for v in plan:
                self._evict(v, now)
                evicted.add(v.request_id)
            # a swapped request's whole context comes back, a decoder grows by its next token
            self.free_blocks -= need
            s.blocks += need
            granted.append(s)
            if chunk_left is not None and s.owes_prefill():
                chunk_left -= self._target_tokens(s, chunk_left) - s.computed_tokens
        return granted

    def _evict(self, v: SimSequence, now: float) -> None:
        mode = choose_mode(self.cost, v.resident_tokens)
        if mode is PreemptionMode.SWAP:
            v.swapped_tokens = v.computed_tokens
            self.stats.swaps += 1
        else:
            v.computed_tokens = v.swapped_tokens = 0
            self.stats.recomputes += 1
        self.free_blocks += v.blocks
        v.blocks = 0
        v.preemptions += 1
        self.stats.preemptions += 1
        if v.request_id in self.paused:
            del self.paused[v.request_id]
            self.queue.remove(v.request_id)  # re-key: it now owes a reload or a recompute
            self.queue.push(v, now)
        # A batch member stays in the batch without memory: it still ranks in the top
        # `batch_limit`, and sending it back to the queue would let it displace another
        # member next iteration, evict it, and so on (thrashing).

    def _execute(self, workers: list[SimSequence], now: float) -> tuple[float, list[SimSequence]]:
        cost = self.cost
        prefill_work: list[float] = []
        decode_contexts: list[int] = []
        chunk_left = self.config.prefill_chunk if self.config.mixed else None
        for s in workers:
            if s.first_scheduled is None:
                s.first_scheduled = now
            if s.owes_prefill():
                target = self._target_tokens(s, chunk_left)
                work = cost.swap_seconds(s.swapped_tokens) + cost.partial_prefill_seconds(target, s.computed_tokens)
                prefill_work.append(work)
                if self._fair is not None:
                    self._fair.charge(s.tenant, prompt_tokens=target - s.computed_tokens)
                if chunk_left is not None:
                    chunk_left -= target - s.computed_tokens
                s.computed_tokens, s.swapped_tokens = target, 0
                if s.spec.prefix_id and target >= s.spec.prefix_tokens:
                    self._remember_prefix(s.spec.prefix_id)
            else:
                decode_contexts.append(context_tokens(s))
                s.output_tokens += 1
                s.computed_tokens += 1
                if self._fair is not None:
                    self._fair.charge(s.tenant, output_tokens=1)
        if self.config.mixed:
            duration = sum(prefill_work)
            if decode_contexts:
                n = len(decode_contexts)
                duration += cost.dc2 * (1 + self.config.batch_overhead * (n - 1)) + cost.dc1 * sum(
                    c + 1 for c in decode_contexts)
        else:
            duration = max(prefill_work + [cost.decode_step_seconds(c) for c in decode_contexts], default=0.0)
        self.stats.iterations += 1
        self.stats.batch_members += len(workers)
        finished = []
        end = now + duration
        for s in workers:
            if s.output_tokens >= 1 and s.first_token is None:
                s.first_token = end
            if s.output_tokens >= s.spec.output_tokens:
                finished.append(s)
                self.running.remove(s)
                self.free_blocks += s.blocks
                s.blocks = 0
                s.finished = end
        return duration, finished

    def _remember_prefix(self, prefix_id: str) -> None:
        if self.config.prefix_cache_entries <= 0:
            return
        self.prefixes[prefix_id] = None
        self.prefixes.move_to_end(prefix_id)
        while len(self.prefixes) > self.config.prefix_cache_entries:
            self.prefixes.popitem(last=False)
