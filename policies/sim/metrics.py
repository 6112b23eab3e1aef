"""Summaries of a run: per-priority latency as the paper reports it, and the usual extras."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PRIORITIES = range(5)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean: float
    p50: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        return cls(len(values), mean(values), percentile(values, 50), percentile(values, 99))


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished request, as metrics need it."""

    request_id: str
    priority: int  # the true priority
    arrival: float
    first_scheduled: float
    first_token: float
    finished: float
    output_tokens: int
    preemptions: int
    replica: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.arrival


@dataclass(frozen=True)
class Summary:
    policy: str
    requests: int
    latency: Distribution
    per_priority: dict[int, Distribution]
    ttft: Distribution
    queueing: Distribution
    throughput_tokens_per_s: float
    makespan: float
    mean_batch_size: float
    preemptions: int
    swaps: int
    recomputes: int
    prefix_hits: int
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        def dist(d: Distribution) -> dict:
            return {"count": d.count, "mean": d.mean, "p50": d.p50, "p99": d.p99}

        return {
            "requests": self.requests,
            "mean": self.latency.mean,
            "p50": self.latency.p50,
            "p99": self.latency.p99,
            "per_priority_mean": [self.per_priority[p].mean for p in PRIORITIES],
            "per_priority_p99": [self.per_priority[p].p99 for p in PRIORITIES],
            "per_priority_count": [self.per_priority[p].count for p in PRIORITIES],
            "ttft": dist(self.ttft),
            "queueing_delay": dist(self.queueing),
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "makespan": self.makespan,
            "mean_batch_size": self.mean_batch_size,
            "preemptions": self.preemptions,
            "swaps": self.swaps,
            "recomputes": self.recomputes,
            "prefix_hits": self.prefix_hits,
            **self.extra,
        }


def summarize(policy: str, done: Sequence[Completion], iterations: int, batch_members: int,
              preemptions: int, swaps: int, recomputes: int, prefix_hits: int) -> Summary:
    start = min((c.arrival for c in done), default=0.0)
    end = max((c.finished for c in done), default=0.0)
    makespan = end - start
    tokens = sum(c.output_tokens for c in done)
    return Summary(
        policy=policy,
        requests=len(done),
        latency=Distribution.of([c.latency for c in done]),
        per_priority={p: Distribution.of([c.latency for c in done if c.priority == p]) for p in PRIORITIES},
        ttft=Distribution.of([c.first_token - c.arrival for c in done]),
        queueing=Distribution.of([c.first_scheduled - c.arrival for c in done]),
        throughput_tokens_per_s=tokens / makespan if makespan > 0 else 0.0,
        makespan=makespan,
        mean_batch_size=batch_members / iterations if iterations else 0.0,
        preemptions=preemptions,
        swaps=swaps,
        recomputes=recomputes,
        prefix_hits=prefix_hits,
    )
