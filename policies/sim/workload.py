"""Workloads: what arrives when, with true and predicted attributes.

Paper mode follows "Semantic Scheduling for LLM Inference" exactly: `gap_num` arrival instants
`gap` seconds apart, a uniform 0..`maxcon` requests at each, priority uniform 0..4, prompt and
output uniform 1..499, all independent. The length predictor is the paper's oracle: 10 buckets of
50 tokens, the true length rounded down or up to a bucket boundary with probability ½ each. The
priority tagger and the length predictor run in batches of 5 taking 1.5 ms each (the paper's
"immediate processing": a batch starts as soon as the predictor is free), so a request reaches
the scheduler at `ready` >= `arrival`. Latency is measured from `arrival`.

Error injection: `error_rate` of the requests (exactly round-down of rate·n, sampled) get their
prediction moved by ±`distance` (priority levels / length buckets), sign uniform. Priorities
are *not* clamped to 0..4: the scheduler must cope with -1 or 6.

Realistic mode: Poisson or bursty (on/off) arrivals, tenants with shared system prompts (the
prefix a cache-aware placer can exploit), skewed priorities and long-tailed output lengths.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class SimRequest:
    request_id: str
    arrival: float  # when the client sent it; latency is measured from here
    ready: float  # when the predictors are done and the scheduler sees it
    priority: int  # the true priority: metrics are grouped by it
    predicted_priority: int
    prompt_tokens: int
    output_tokens: int  # true output length: the request finishes after this many
    predicted_output_tokens: int
    tenant: str = ""
    app: str = ""
    prefix_id: str = ""  # shared system prompt, "" for none
    prefix_tokens: int = 0  # leading prompt tokens shared with the others of `prefix_id`


@dataclass(frozen=True, slots=True)
class PredictorSpec:
    bucket_tokens: int = 50
    batch_size: int = 5
    batch_seconds: float = 0.0015
    priority_error_rate: float = 0.0
    priority_error_distance: int = 0
    length_error_rate: float = 0.0
    length_error_distance: int = 0  # in buckets


def bucket_prediction(rng: random.Random, tokens: int, bucket: int) -> int:
    """The paper's oracle: round to the bucket boundary below or above, ½ each."""
    down = (tokens // bucket) * bucket
    up = math.ceil(tokens / bucket) * bucket
    return up if rng.random() < 0.5 else down


def predictor_ready_times(arrivals: list[float], batch_size: int, batch_seconds: float) -> list[float]:
    """When each request leaves a batched predictor that starts a batch (of up to
    `batch_size` queued requests, FIFO) whenever it is free and something is queued."""
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))
    ready = [0.0] * len(arrivals)
    waiting: deque[int] = deque()
    free_at = 0.0
    k = 0
    while k < len(order) or waiting:
        if not waiting:
            free_at = max(free_at, arrivals[order[k]])
        while k < len(order) and arrivals[order[k]] <= free_at:
            waiting.append(order[k])
            k += 1
        batch = [waiting.popleft() for _ in range(min(batch_size, len(waiting)))]
        free_at += batch_seconds
        for i in batch:
            ready[i] = free_at
    return ready


def inject_errors(rng: random.Random, requests: list[SimRequest], spec: PredictorSpec) -> list[SimRequest]:
    out = list(requests)
    n = len(out)
    for i in rng.sample(range(n), int(n * spec.priority_error_rate)):
        shift = spec.priority_error_distance * rng.choice((-1, 1))
        out[i] = replace(out[i], predicted_priority=out[i].predicted_priority + shift)
    for i in rng.sample(range(n), int(n * spec.length_error_rate)):
        shift = spec.length_error_distance * spec.bucket_tokens * rng.choice((-1, 1))
        out[i] = replace(out[i], predicted_output_tokens=max(0, out[i].predicted_output_tokens + shift))
    return out


def _finish(rng: random.Random, raw: list[SimRequest], spec: PredictorSpec) -> list[SimRequest]:
    ready = predictor_ready_times([r.arrival for r in raw], spec.batch_size, spec.batch_seconds)
    timed = [replace(r, ready=t) for r, t in zip(raw, ready)]
    return inject_errors(rng, timed, spec)


def paper_workload(
    seed: int,
    gap: float,
    maxcon: int,
    gap_num: int = 20,
    max_prompt: int = 499,
    max_output: int = 499,
    predictor: PredictorSpec = PredictorSpec(),
) -> list[SimRequest]:
    rng = random.Random(seed)
    counts = [rng.randint(0, maxcon) for _ in range(gap_num)]
    raw: list[SimRequest] = []
    for instant, count in enumerate(counts):
        for _ in range(count):
            priority = rng.randint(0, 4)
            prompt = rng.randint(1, max_prompt)
            output = rng.randint(1, max_output)
            predicted = bucket_prediction(rng, output, predictor.bucket_tokens)
            raw.append(SimRequest(f"r{len(raw)}", instant * gap, instant * gap, priority, priority,
                                  prompt, output, predicted))
    return _finish(rng, raw, predictor)


@dataclass(frozen=True, slots=True)
class RealisticSpec:
    requests: int = 400
    rate: float = 20.0  # mean arrivals per second
    bursty: bool = False  # on/off: bursts at 4x the rate, then silence, same mean
    tenants: int = 4
    system_prompt_tokens: int = 1024  # shared by a tenant's requests
    user_tokens_max: int = 256
    mean_output_tokens: int = 200
    max_output_tokens: int = 1024
    priority_weights: tuple[float, ...] = (0.1, 0.2, 0.4, 0.2, 0.1)


def realistic_workload(
    seed: int, spec: RealisticSpec = RealisticSpec(), predictor: PredictorSpec = PredictorSpec()
) -> list[SimRequest]:
    rng = random.Random(seed)
    t = 0.0
    raw: list[SimRequest] = []
    burst_left = 0
    for i in range(spec.requests):
        if spec.bursty:
            if burst_left == 0:  # a silence, then a burst of ~10 at 4x the rate
                t += rng.expovariate(spec.rate / 10) * 0.75
                burst_left = 1 + int(rng.expovariate(1 / 10))
            t += rng.expovariate(spec.rate * 4)
            burst_left -= 1
        else:
            t += rng.expovariate(spec.rate)
        tenant = f"t{rng.randrange(spec.tenants)}"
        priority = rng.choices(range(len(spec.priority_weights)), spec.priority_weights)[0]
        prompt = spec.system_prompt_tokens + rng.randint(1, spec.user_tokens_max)
        # log-normal-ish long tail around the mean, clipped
        output = min(spec.max_output_tokens, max(1, int(rng.lognormvariate(math.log(spec.mean_output_tokens) - 0.5, 1.0))))
        predicted = bucket_prediction(rng, output, predictor.bucket_tokens)
        raw.append(SimRequest(f"r{i}", t, t, priority, priority, prompt, output, predicted,
                              tenant=tenant, app=f"{tenant}/s{rng.randrange(8)}",
                              prefix_id=tenant, prefix_tokens=spec.system_prompt_tokens))
    return _finish(rng, raw, predictor)
