"""AdmissionQueue: requests that found every candidate backend saturated wait here.

Waiting requests are ordered by a `policies/` ordering (semantic with aging by default), so
priorities mean something even in front of a vLLM that runs FCFS. One queue per set of
candidate backends keeps a request for one model from blocking a request for another.

Limits: a total length and a length per priority; when the total is reached, the least urgent
(and newest) waiting request is shed to make room for a more urgent one. Each priority has a
timeout. A request leaves the queue the moment its client disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from triage_router.policies.catalog import make_ordering
from triage_router.policies.cost_model import CostModel
from triage_router.policies.fair_share import fair_share_of
from triage_router.policies.queue import RequestQueue
from triage_router.policies.request import MOST_URGENT, PRIORITY_LEVELS
from triage_router.router.config import AdmissionConfig
from triage_router.router.errors import QueueFull, QueueTimeout, Shed
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.fingerprint import PrefixFingerprint
from triage_router.router.metrics import RouterMetrics

if TYPE_CHECKING:
    from triage_router.router.routing.kv_events.prompt_tokens import PromptTokens


@dataclass(eq=False, slots=True)
class Job:
    """A request asking for a backend; it satisfies `triage_router.policies.request.RequestState`."""

    request_id: str
    priority: int
    arrival: float
    prompt_tokens: int
    predicted_output_tokens: int
    fingerprint: PrefixFingerprint
    candidates: frozenset[str]
    exclude: frozenset[str] = frozenset()
    session: str | None = None
    app: str = ""
    tenant: str = ""
    model: str = ""
    # Which step decided the priority ("header", "rule:<name>", ...), for the status page.
    priority_source: str = ""
    output_tokens: int = 0
    computed_tokens: int = 0
    swapped_tokens: int = 0
    # Resolved with the backend it was placed on (its slot already taken): the object, not its
    # name, since a reload may take that name out of the pool while the request runs.
    placed: asyncio.Future[Backend] | None = field(default=None, repr=False)
    # When its slot was last taken (the dispatcher's clock): the end of its admission wait.
    placed_at: float = 0.0
    # The prompt's token ids under each tokenizer a candidate's KV events need, by its path.
    tokenized: dict[str, PromptTokens] = field(default_factory=dict, repr=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.predicted_output_tokens


def cost_model(config: AdmissionConfig) -> CostModel:
    return CostModel(config.decode_c1, config.decode_c2, config.prefill_c1, config.prefill_c2,
                     config.swap_s_per_token)


class AdmissionQueue:
    def __init__(self, config: AdmissionConfig, metrics: RouterMetrics, clock: Callable[[], float]) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._cost = cost_model(config)
        # One ordering for every queue: a fair share's counters are per tenant, not per queue.
        self._ordering = make_ordering(config.ordering, self._cost, config.aging_bound_s)
        self.fair_share = fair_share_of(self._ordering)
        self._queues: dict[frozenset[str], RequestQueue[Job]] = {}
        # Waiting jobs per priority in arrival order: the shedding order.
        self._by_priority: list[dict[str, Job]] = [{} for _ in range(PRIORITY_LEVELS)]

    def __len__(self) -> int:
        return sum(map(len, self._by_priority))

    def __bool__(self) -> bool:
        # Asked at every release (is anyone waiting?): cheaper than counting.
        return any(self._by_priority)

    def waiting(self, priority: int) -> int:
        return len(self._by_priority[priority])

    async def wait(self, job: Job) -> Backend:
        """Queue `job` until `pump` places it; return the backend."""
        self._make_room(job)
        queue = self._queues.get(job.candidates)
        if queue is None:
            queue = self._queues[job.candidates] = RequestQueue(self._ordering)
        job.placed = asyncio.get_running_loop().create_future()
        queue.push(job, self.clock())
        self._by_priority[job.priority][job.request_id] = job
        self._gauge(job.priority)
        timeout = self.config.timeout_s[job.priority]
        try:
            done, _ = await asyncio.wait({job.placed}, timeout=timeout)
        except asyncio.CancelledError:
            # The client left. If a slot was already taken for it, the caller gives it back.
            self._forget(job)
            raise
        if not done:
            self._forget(job)
            self._count_rejection(job.priority, "timeout")
            raise QueueTimeout(f"no backend had room for this priority-{job.priority} request within {timeout:g} s")
        return job.placed.result()

    def pump(self, place: Callable[[Job], Backend | None]) -> None:
        """Place waiting jobs, best first, while their candidates have room.

        `place` takes the slot and returns the backend, or returns None if none has room; the
        head of each queue then blocks the rest of that queue (they share its candidates).
        """
        now = self.clock()
        for queue in self._queues.values():
            while len(queue):
                job = queue.peek(now)
                assert job is not None
                backend = place(job)
                if backend is None:
                    break
                # By id, not pop(): placing charges a fair share, which may reorder the queue.
                queue.remove(job.request_id)
                del self._by_priority[job.priority][job.request_id]
                self._gauge(job.priority)
                assert job.placed is not None
                job.placed.set_result(backend)
            queue.drain()

    def _make_room(self, job: Job) -> None:
        """Refuse `job` (429) or displace a less urgent waiting request for it (503 to that one).

        A full queue sheds its least urgent, newest request for a more urgent arrival; an arrival
        with nothing less urgent to displace is refused. A priority's own limit refuses its
        arrivals, except priority 0's: the most urgent work is never refused while less urgent
        work waits, so it displaces some instead.
        """
        level_full = self.waiting(job.priority) >= self.config.max_queued_per_priority[job.priority]
        if not level_full and len(self) < self.config.max_queued:
            return
        if level_full and job.priority != MOST_URGENT:
            self._count_rejection(job.priority, "full")
            raise QueueFull(f"the queue for priority {job.priority} is full", retry_after_s=self.config.retry_after_s)
        for priority in range(PRIORITY_LEVELS - 1, job.priority, -1):
            jobs = self._by_priority[priority]
            if jobs:
                victim = jobs[next(reversed(jobs))]
                self._forget(victim)
                self._count_rejection(priority, "shed")
                assert victim.placed is not None
                victim.placed.set_exception(
                    Shed("shed to make room for more urgent work", retry_after_s=self.config.retry_after_s)
                )
                return
        self._count_rejection(job.priority, "full")
        raise QueueFull("the admission queue is full", retry_after_s=self.config.retry_after_s)

    def _forget(self, job: Job) -> None:
        queue = self._queues.get(job.candidates)
        if queue is not None:
            queue.remove(job.request_id)
        if self._by_priority[job.priority].pop(job.request_id, None) is not None:
            self._gauge(job.priority)

    def _gauge(self, priority: int) -> None:
        self.metrics.child(self.metrics.queue_length, str(priority)).set(self.waiting(priority))

    def _count_rejection(self, priority: int, reason: str) -> None:
        self.metrics.child(self.metrics.queue_rejections, str(priority), reason).inc()
