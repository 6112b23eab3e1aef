"""The event loop: arrivals, placement across replicas, and each replica's iterations.

Events are (time, kind, sequence number): at equal times arrivals (kind 0) come before
iteration ends (kind 1) and ties keep insertion order, so a run is a pure function of its
inputs. Every request that arrives completes exactly once; `simulate` checks it.

Placement sees a `BackendState` snapshot of every replica. With `rebalance_every` set, the
simulator also applies `balance_pairs` to the *waiting* requests of the replicas (a running
request's KV would have to move too, which this simulator does not model).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from triage_router.policies.catalog import DEFAULT_AGING_BOUND, make_admission, make_ordering
from triage_router.policies.placement import (
    BackendState, CacheAffinity, LeastLoad, Placer, PlacementRequest, PowerOfTwoChoices, QosAware,
    RoundRobin,
)
from triage_router.policies.rebalancing import ReplicaState, ResidentRequest, balance_pairs
from triage_router.policies.request import remaining_tokens
from triage_router.policies.sim.hardware import HardwareSetting
from triage_router.policies.sim.metrics import Completion, Summary, summarize
from triage_router.policies.sim.replica import Replica, ReplicaConfig, SimSequence
from triage_router.policies.sim.workload import SimRequest

PLACERS: dict[str, Callable[["SimConfig"], Placer]] = {
    "round-robin": lambda c: RoundRobin(),
    "least-load": lambda c: LeastLoad(),
    "power-of-two": lambda c: PowerOfTwoChoices(),
    "cache-affinity": lambda c: CacheAffinity(),
    # Parrot: P0-only replicas keep a small cap, P0 spills to the others when they are full
    "qos-aware": lambda c: QosAware(LeastLoad(), critical=0, critical_cap=c.critical_cap),
}

ARRIVAL, ITERATION_END, REBALANCE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SimConfig:
    setting: HardwareSetting
    replicas: int = 1
    batch_limit: int = 16
    block_tokens: int = 32
    mixed: bool = False
    batch_overhead: float = 0.0
    prefill_chunk: int | None = None
    prefix_cache_entries: int = 0
    preemptive: bool = True
    placement: str = "least-load"
    aging_bound: float = DEFAULT_AGING_BOUND
    rebalance_every: float | None = None
    wsjf_weights: tuple[float, ...] | None = None
    critical_replicas: int = 0  # the first N replicas serve priority 0 only
    critical_cap: int = 4  # their concurrency cap under qos-aware placement

    def replica_config(self) -> ReplicaConfig:
        return ReplicaConfig(
            kv_blocks=self.setting.kv_blocks(self.block_tokens),
            batch_limit=self.batch_limit,
            block_tokens=self.block_tokens,
            mixed=self.mixed,
            batch_overhead=self.batch_overhead,
            prefill_chunk=self.prefill_chunk,
            prefix_cache_entries=self.prefix_cache_entries,
            preemptive=self.preemptive,
        )


@dataclass(frozen=True)
class SimResult:
    summary: Summary
    completions: list[Completion]
    migrations: int


def simulate(requests: Sequence[SimRequest], policy: str, config: SimConfig) -> SimResult:
    cost = config.setting.cost
    rc = config.replica_config()
    replicas = [
        Replica(f"replica{i}", rc, cost,
                make_ordering(policy, cost, config.aging_bound, config.wsjf_weights,
                              kv_capacity_tokens=rc.kv_blocks * rc.block_tokens, batch_limit=rc.batch_limit),
                make_admission(policy, prefill_stalls_decode=not rc.mixed))
        for i in range(config.replicas)
    ]
    placer = PLACERS[config.placement](config)
    if config.critical_replicas >= config.replicas > 1:
        raise ValueError("at least one replica must serve the non-critical priorities")
    events: list[tuple[float, int, int, int]] = []
    seq = 0

    def schedule(t: float, kind: int, index: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, kind, seq, index))

    for i, r in enumerate(requests):
        schedule(r.ready, ARRIVAL, i)
    if config.rebalance_every and config.replicas > 1:
        schedule(config.rebalance_every, REBALANCE, -1)
    busy = [False] * len(replicas)
    done: list[Completion] = []
    seen: set[str] = set()
    migrations = 0
    stalled = 0

    def start(i: int, now: float) -> None:
        nonlocal stalled
        duration, finished = replicas[i].step(now)
        stalled = stalled + 1 if duration == 0.0 and not finished else 0
        if stalled > 2 * len(replicas) + 2:
            raise RuntimeError(f"{replicas[i].name} makes no progress at t={now}")
        for s in finished:
            done.append(_completion(s))
        busy[i] = True
        schedule(now + duration, ITERATION_END, i)

    while events:
        now, kind, _, index = heapq.heappop(events)
        if kind == ARRIVAL:
            spec = requests[index]
            if spec.request_id in seen:
                raise ValueError(f"duplicate request id {spec.request_id}")
            seen.add(spec.request_id)
            target = _place(placer, replicas, spec, now, config.critical_replicas)
            replicas[target].enqueue(SimSequence(spec), now)
            if not busy[target]:
                start(target, now)
        elif kind == ITERATION_END:
            busy[index] = False
            if replicas[index].has_work():
                start(index, now)
        else:
            migrations += _rebalance(replicas, now, busy, start)
            if any(r.has_work() for r in replicas) or len(seen) < len(requests):
                schedule(now + (config.rebalance_every or 0.0), REBALANCE, -1)

    if len(done) != len(requests) or len({c.request_id for c in done}) != len(done):
        raise AssertionError(f"{len(requests)} arrived but {len(done)} completed")
    stats = [r.stats for r in replicas]
    summary = summarize(
        policy, done,
        iterations=sum(s.iterations for s in stats),
        batch_members=sum(s.batch_members for s in stats),
        preemptions=sum(s.preemptions for s in stats),
        swaps=sum(s.swaps for s in stats),
        recomputes=sum(s.recomputes for s in stats),
        prefix_hits=sum(s.prefix_hits for s in stats),
    )
    summary.extra["migrations"] = float(migrations)
    return SimResult(summary, done, migrations)


def _completion(s: SimSequence) -> Completion:
    assert s.finished is not None and s.first_scheduled is not None and s.first_token is not None
    return Completion(s.request_id, s.spec.priority, s.spec.arrival, s.first_scheduled,
                      s.first_token, s.finished, s.output_tokens, s.preemptions, s.replica)


def _place(placer: Placer, replicas: list[Replica], spec: SimRequest, now: float, critical: int) -> int:
    if len(replicas) == 1:
        return 0
    snapshot = [
        BackendState(r.name, load=r.load, in_flight_tokens=r.in_flight_tokens(),
                     prefix_match_tokens=r.prefix_match_tokens(spec), cached_prefixes=len(r.prefixes),
                     serves_priorities=frozenset({0}) if i < critical else None)
        for i, r in enumerate(replicas)
    ]
    request = PlacementRequest(spec.request_id, spec.predicted_priority, spec.prompt_tokens,
                               spec.predicted_output_tokens)
    placement = placer.place(request, snapshot, now)
    if placement.backend is None:  # non-critical replicas take everything: cannot happen
        raise RuntimeError(f"no replica for {spec.request_id}: {placement.reason}")
    return next(i for i, r in enumerate(replicas) if r.name == placement.backend)


def _rebalance(replicas: list[Replica], now: float, busy: list[bool], start: Callable[[int, float], None]) -> int:
    snapshot = [
        ReplicaState(r.name, tuple(
            ResidentRequest(s.request_id, s.resident_tokens, float(remaining_tokens(s)))
            for s in r.queue if s.request_id not in r.paused))
        for r in replicas
    ]
    by_name = {r.name: i for i, r in enumerate(replicas)}
    moved = 0
    for m in balance_pairs(snapshot):
        s = replicas[by_name[m.source]].withdraw(m.request_id)
        if s is None:
            continue
        target = by_name[m.target]
        replicas[target].enqueue(s, now)
        moved += 1
        if not busy[target]:
            start(target, now)
    return moved
