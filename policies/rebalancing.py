"""Rebalancing across replicas, as decisions over a snapshot (the survey's two techniques).

Both functions read `ReplicaState`s and return `Migration`s; they move nothing themselves, so
an engine fleet and the simulator apply them the same way. They never propose moving a request
twice in one call, and never onto the replica it is on.

- `balance_pairs`: pair the most loaded replica with the least loaded, the second most with the
  second least, and so on; within a pair move requests from high to low, largest first among
  those that shrink the gap, until the gap is within `tolerance` of the mean load.
- `specialise_by_cache_size`: replicas declare the largest per-request KV they are meant for
  (`max_request_tokens`); long requests belong on high-limit replicas (few of them, so they are
  not preempted), short ones on low-limit replicas (many, cheap). `tier_for` is the initial
  assignment from the prompt length; a request whose KV has grown past its replica's limit
  migrates to the least loaded replica of the smallest tier that fits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ResidentRequest:
    request_id: str
    kv_tokens: int
    load: float  # its share of the replica's load, e.g. remaining tokens or seconds


@dataclass(frozen=True, slots=True)
class ReplicaState:
    name: str
    requests: tuple[ResidentRequest, ...] = ()
    max_request_tokens: int | None = None  # None: no limit (the top tier)

    @property
    def load(self) -> float:
        return sum(r.load for r in self.requests)


@dataclass(frozen=True, slots=True)
class Migration:
    request_id: str
    source: str
    target: str
    reason: str


def balance_pairs(replicas: Sequence[ReplicaState], tolerance: float = 0.1) -> list[Migration]:
    if len(replicas) < 2:
        return []
    loads = {r.name: r.load for r in replicas}
    mean = sum(loads.values()) / len(replicas)
    ranked = sorted(replicas, key=lambda r: (loads[r.name], r.name))
    moves: list[Migration] = []
    for i in range(len(ranked) // 2):
        low, high = ranked[i], ranked[-1 - i]
        pending = sorted(high.requests, key=lambda q: (-q.load, q.request_id))
        for req in pending:
            gap = loads[high.name] - loads[low.name]
            if gap <= tolerance * mean:
                break
            if 0 < req.load < gap:  # moving it shrinks the gap (|gap - 2·load| < gap)
                loads[high.name] -= req.load
                loads[low.name] += req.load
                moves.append(Migration(req.request_id, high.name, low.name,
                                       f"balance pair {high.name}->{low.name}"))
    return moves


def _fits(tokens: int, r: ReplicaState) -> bool:
    return r.max_request_tokens is None or tokens <= r.max_request_tokens


def _tier_rank(r: ReplicaState) -> float:
    return float("inf") if r.max_request_tokens is None else float(r.max_request_tokens)


def tier_for(tokens: int, replicas: Sequence[ReplicaState]) -> str | None:
    """The least loaded replica of the smallest tier that fits `tokens` of KV."""
    fitting = [r for r in replicas if _fits(tokens, r)]
    if not fitting:
        return None
    smallest = min(_tier_rank(r) for r in fitting)
    tier = [r for r in fitting if _tier_rank(r) == smallest]
    return min(tier, key=lambda r: (r.load, r.name)).name


def specialise_by_cache_size(replicas: Sequence[ReplicaState]) -> list[Migration]:
    moves: list[Migration] = []
    extra: dict[str, float] = {}  # load already planned onto each target in this call
    for replica in sorted(replicas, key=lambda r: r.name):
        for req in sorted(replica.requests, key=lambda q: q.request_id):
            if _fits(req.kv_tokens, replica):
                continue
            adjusted = [ReplicaState(r.name, r.requests + (ResidentRequest("", 0, extra.get(r.name, 0.0)),),
                                     r.max_request_tokens) for r in replicas]
            target = tier_for(req.kv_tokens, adjusted)
            if target is None or target == replica.name:
                continue
            extra[target] = extra.get(target, 0.0) + req.load
            moves.append(Migration(req.request_id, replica.name, target,
                                   f"KV {req.kv_tokens} > limit {replica.max_request_tokens}"))
    return moves
