"""Placement across replicas: which backend serves a request, with the reasons.

Every placer is a pure function of a snapshot: `place(request, backends, now) -> Placement`.
The router builds one `BackendState` per backend for each request (its load, its outstanding
tokens, how many of *this* request's prompt tokens it already caches), so several router
replicas given the same inputs pick the same backend. A `Placement` carries one
`CandidateScore` per backend, ineligible ones included, so a decision can be explained.

Eligibility is shared by all placers: a backend must be healthy, serve the request's priority,
and be under its concurrency cap (QoS-aware engines keep a small one). No eligible backend
means `Placement.backend is None`: the request waits in the admission queue.

The records below are built for every request on the router's hot path, so they are plain
slotted dataclasses: a frozen one costs 2.7 times as much to build. Placers never change what
they are given, and nobody changes a Placement once made. For the same reason a Placement's
reason and candidates are formatted only when read: a request is placed every time and
explained rarely (a debug header, /status, a trace), and the formatting cost more than the
decision (12 of 14 µs for one backend).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Protocol

_UNSCORED = float("-inf")
_name = attrgetter("name")


@dataclass(slots=True)
class BackendState:
    name: str
    load: int = 0  # requests running + waiting there
    in_flight_tokens: int = 0  # prompt + predicted output tokens not yet finished
    prefix_match_tokens: int = 0  # tokens of this request's prompt cached there
    cached_prefixes: int = 0  # distinct prompt roots (system prompts, conversations) cached there
    cached_tokens: int = 0  # distinct prompt tokens recently sent there: its cache's working set
    kv_capacity_tokens: int | None = None  # its KV cache's size; None: unknown
    home: bool = False  # this request's prompt root (system prompt, conversation) was last sent here
    kv_usage: float = 0.0  # fraction of KV blocks in use, 0..1
    serves_priorities: frozenset[int] | None = None  # None: every priority
    concurrency_cap: int | None = None  # None: no cap
    healthy: bool = True


@dataclass(slots=True)
class PlacementRequest:
    request_id: str
    priority: int
    prompt_tokens: int
    predicted_output_tokens: int = 0


@dataclass(slots=True)
class CandidateScore:
    backend: str
    score: float  # higher is better; meaningful only among eligible candidates
    eligible: bool
    reason: str


Explanation = Callable[[], tuple[str, tuple[CandidateScore, ...]]]


class Placement:
    """Where a request goes (`backend`; None: nowhere has room, it waits), by which `policy`,
    why (`reason`) and how every candidate scored (`candidates`). Given `explain` instead of
    a reason and candidates, those two are computed from it when first read."""

    __slots__ = ("backend", "policy", "_reason", "_candidates", "_explain")

    def __init__(self, backend: str | None, policy: str, reason: str = "",
                 candidates: tuple[CandidateScore, ...] = (), *, explain: Explanation | None = None) -> None:
        self.backend = backend
        self.policy = policy
        self._reason = reason
        self._candidates = candidates
        self._explain = explain

    @property
    def reason(self) -> str:
        self._explained()
        return self._reason

    @property
    def candidates(self) -> tuple[CandidateScore, ...]:
        self._explained()
        return self._candidates

    def _explained(self) -> None:
        if self._explain is not None:
            self._reason, self._candidates = self._explain()
            self._explain = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Placement):
            return NotImplemented
        return (self.backend, self.policy, self.reason, self.candidates) == (
            other.backend, other.policy, other.reason, other.candidates)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and not immutable

    def __repr__(self) -> str:
        return (f"Placement(backend={self.backend!r}, policy={self.policy!r}, reason={self.reason!r}, "
                f"candidates={self.candidates!r})")


class Placer(Protocol):
    name: str

    def place(
        self, request: PlacementRequest, backends: Sequence[BackendState], now: float
    ) -> Placement: ...


def ineligibility(request: PlacementRequest, b: BackendState) -> str | None:
    """Why `b` cannot take `request`, or None if it can."""
    if not b.healthy:
        return "unhealthy"
    if b.serves_priorities is not None and request.priority not in b.serves_priorities:
        return f"does not serve priority {request.priority}"
    if b.concurrency_cap is not None and b.load >= b.concurrency_cap:
        return f"at its concurrency cap ({b.load}/{b.concurrency_cap})"
    return None


def _decide(
    policy: str,
    request: PlacementRequest,
    backends: Sequence[BackendState],
    score: dict[str, float],
    reasons: Callable[[], dict[str, str]],
    why: Callable[[], str],
) -> Placement:
    """Pick the eligible backend with the highest score. Ties are broken by a hash of the
    request id: the same on every router replica, and spread evenly, where name order would
    send every tie (say, two idle backends) to the same backend. `reasons` (per backend) and
    `why` are called only if the placement is explained."""
    ordered = sorted(backends, key=_name) if len(backends) > 1 else backends
    best_score = _UNSCORED
    tied: list[str] = []
    for b in ordered:
        s = score.get(b.name, _UNSCORED)
        if s == _UNSCORED or ineligibility(request, b) is not None:
            continue
        if s > best_score:
            best_score, tied = s, [b.name]
        elif s == best_score:
            tied.append(b.name)

    def explain() -> tuple[str, tuple[CandidateScore, ...]]:
        reason_of = reasons()
        candidates = []
        for b in ordered:
            blocked = ineligibility(request, b)
            if blocked is not None:
                candidates.append(CandidateScore(b.name, _UNSCORED, False, blocked))
            else:
                s = score.get(b.name, _UNSCORED)
                candidates.append(CandidateScore(b.name, s, s != _UNSCORED, reason_of.get(b.name, "")))
        return (why() if tied else "no eligible backend"), tuple(candidates)

    if not tied:
        return Placement(None, policy, explain=explain)
    chosen = tied[0] if len(tied) == 1 else tied[_request_hash(request.request_id) % len(tied)]
    return Placement(chosen, policy, explain=explain)


def _eligible(request: PlacementRequest, backends: Sequence[BackendState]) -> list[BackendState]:
    eligible = [b for b in backends if ineligibility(request, b) is None]
    if len(eligible) > 1:
        eligible.sort(key=_name)
    return eligible


class RoundRobin:
    """Eligible backends in name order, in turn. Holds a cursor: one instance per router."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def place(self, request: PlacementRequest, backends: Sequence[BackendState], now: float) -> Placement:
        eligible = _eligible(request, backends)
        score: dict[str, float] = {}
        if eligible:
            n = len(eligible)
            for i, b in enumerate(eligible):
                score[b.name] = -float((i - self._turn) % n)  # 0 for the one whose turn it is
            self._turn = (self._turn + 1) % n
        return _decide(self.name, request, backends, score, dict, lambda: "its turn")


class LeastLoad:
    """Greedy least-load: fewest requests, then fewest outstanding tokens (2x optimal makespan)."""

    name = "least-load"

    def place(self, request: PlacementRequest, backends: Sequence[BackendState], now: float) -> Placement:
        score = {b.name: -(b.load + b.in_flight_tokens / 1e6) for b in backends}
        return _decide(self.name, request, backends, score,
                       lambda: {b.name: f"load {b.load}, {b.in_flight_tokens} tokens" for b in backends},
                       lambda: "least loaded")


def _request_hash(request_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


def _sample_two(request_id: str, n: int) -> tuple[int, int]:
    """Two distinct indices from a hash of the request id: the same on every router replica."""
    h = _request_hash(request_id)
    first = h % n
    second = (first + 1 + (h // n) % (n - 1)) % n
    return first, second


class PowerOfTwoChoices:
    """Sample two eligible backends (by request-id hash), take the less loaded."""

    name = "power-of-two"

    def place(self, request: PlacementRequest, backends: Sequence[BackendState], now: float) -> Placement:
        eligible = _eligible(request, backends)
        if len(eligible) < 2:
            sampled = eligible
        else:
            i, j = _sample_two(request.request_id, len(eligible))
            sampled = [eligible[i], eligible[j]]
        score = {b.name: -(b.load + b.in_flight_tokens / 1e6) for b in sampled}

        def reasons() -> dict[str, str]:
            names = {b.name for b in sampled}
            return {b.name: (f"sampled, load {b.load}" if b.name in names else "not sampled") for b in backends}

        return _decide(self.name, request, backends, score, reasons, lambda: "less loaded of two")


class CacheAffinity:
    """Cache affinity with bounded load, as SGLang's `cache_aware` router ("sticky until
    saturated" in llm-d's words):

    1. if the fleet is imbalanced (busiest − idlest > `abs_threshold` requests *and*
       busiest > `rel_threshold` × idlest), go to the least loaded backend;
    2. else if the best prefix match covers more than `cache_threshold` of the prompt, go to
       the backend with the longest match (ties: the less loaded);
    3. else if the request's prompt root (first block) was last sent to an eligible backend,
       go back there: its blocks may be forgotten, but moving the tenant would duplicate its
       prompt on another cache and change the fleet's split for good;
    4. else the prefix is new to the fleet (typically a new tenant or conversation):
       a. among the backends whose cache still has room for it (working set + prompt within
          the KV capacity; unknown capacity counts as room), the one holding the fewest
          distinct prefixes, then the fewest outstanding tokens. Placing by momentary load
          split tenants 56/40 (runs 3-4 of bench/fleet) and affinity kept the uneven split;
       b. if no cache has room, the one already holding the most prefixes, as long as it
          then holds at most `overflow_imbalance` × an even share of them all (1.2 of 2
          backends: 60%). LRU under a cyclic working set larger than the cache falls off a
          cliff, so the overflow is better concentrated on one backend, keeping the other
          caches within their working sets, than spread so that every cache thrashes
          (bench/fleet run 9: a 5/7 tenant split beat the even 6/6 one).
    """

    name = "cache-affinity"

    def __init__(
        self, abs_threshold: int = 64, rel_threshold: float = 1.5, cache_threshold: float = 0.3,
        overflow_imbalance: float = 1.2,
    ) -> None:
        self.abs_threshold = abs_threshold
        self.rel_threshold = rel_threshold
        self.cache_threshold = cache_threshold
        self.overflow_imbalance = overflow_imbalance

    def place(self, request: PlacementRequest, backends: Sequence[BackendState], now: float) -> Placement:
        eligible = _eligible(request, backends)
        if not eligible:
            return _decide(self.name, request, backends, {}, dict, str)
        # One pass for what the rules below compare: this runs for every request.
        busiest = idlest = eligible[0].load
        longest, any_home = 0, False
        for b in eligible:
            busiest, idlest = max(busiest, b.load), min(idlest, b.load)
            longest = max(longest, b.prefix_match_tokens)
            any_home = any_home or b.home
        if busiest - idlest > self.abs_threshold and busiest > self.rel_threshold * idlest:
            score = {b.name: -(b.load + b.in_flight_tokens / 1e6) for b in eligible}
            return _decide(self.name, request, backends, score, lambda: {b.name: f"load {b.load}" for b in eligible},
                           lambda: f"imbalanced ({busiest} vs {idlest}): least loaded")
        best_match = longest / max(request.prompt_tokens, 1)

        def reasons() -> dict[str, str]:
            return {b.name: f"prefix {b.prefix_match_tokens}/{request.prompt_tokens}, load {b.load}" for b in eligible}

        if best_match > self.cache_threshold:
            # match first; load breaks ties (a load of < 1e6 never outweighs one matched token)
            score = {b.name: b.prefix_match_tokens - b.load / 1e6 for b in eligible}
            return _decide(self.name, request, backends, score, reasons,
                           lambda: f"longest prefix match ({best_match:.0%} of the prompt)")
        if any_home:
            score = {b.name: float(b.home) for b in eligible}
            return _decide(self.name, request, backends, score, reasons,
                           lambda: f"no useful match ({best_match:.0%}): back where its prompt root was last sent")
        return self._place_new_prefix(request, backends, eligible, reasons, best_match)

    def _place_new_prefix(
        self, request: PlacementRequest, backends: Sequence[BackendState], eligible: list[BackendState],
        match_reasons: Callable[[], dict[str, str]], best_match: float,
    ) -> Placement:
        def reasons() -> dict[str, str]:
            by_match = match_reasons()
            return {b.name: f"{by_match[b.name]}, {b.cached_prefixes} prefixes / {b.cached_tokens} tokens cached"
                    for b in eligible}

        def why(rule: str) -> Callable[[], str]:
            return lambda: f"no useful match ({best_match:.0%}){rule}"

        # Outstanding tokens break ties (they never outweigh one prefix).
        def tie_break(b: BackendState) -> float:
            return (b.in_flight_tokens + b.load / 1e6) / 1e9

        roomy = [b for b in eligible if b.kv_capacity_tokens is None
                 or b.cached_tokens + request.prompt_tokens <= b.kv_capacity_tokens]
        if roomy:
            score = {b.name: -(b.cached_prefixes + tie_break(b)) for b in roomy}
            return _decide(self.name, request, backends, score, reasons,
                           why(": fewest cached prefixes among caches with room"))
        total = sum(b.cached_prefixes for b in eligible) + 1
        most = self.overflow_imbalance * total / len(eligible)
        within = [b for b in eligible if b.cached_prefixes + 1 <= most + 1e-9]
        if within:
            score = {b.name: b.cached_prefixes - tie_break(b) for b in within}
            return _decide(self.name, request, backends, score, reasons,
                           why(", no cache has room: overflow onto the fullest"))
        score = {b.name: -(b.cached_prefixes + tie_break(b)) for b in eligible}
        return _decide(self.name, request, backends, score, reasons,
                       why(", no cache has room: fewest cached prefixes"))


def session_placement(session: str, backends: Sequence[BackendState]) -> Placement | None:
    """Rendezvous hashing of a session id over the healthy backends: every router replica sends
    a session to the same backend, and it stays there while that backend has room (the caller
    passes only backends with room). None if none is healthy."""
    healthy = [b for b in backends if b.healthy]
    if not healthy:
        return None
    chosen = max(healthy, key=lambda b: _request_hash(f"{session}\x1f{b.name}"))
    return Placement(chosen.name, "session", explain=lambda: (f"session {session!r}", ()))


class QosAware:
    """Parrot's QoS-aware placement. Backends are split into latency-critical ones (they serve
    priorities <= `critical`) and bulk ones. A critical request goes to a critical backend
    under its small `critical_cap` (batch size sets per-token latency, so the cap keeps it low),
    and spills to bulk backends only if every critical one is full; other requests never take
    a critical backend's slots. Within the allowed set, `inner` decides.
    """

    name = "qos-aware"

    def __init__(self, inner: Placer, critical: int = 0, critical_cap: int = 4) -> None:
        self.inner = inner
        self.critical = critical
        self.critical_cap = critical_cap

    def is_critical_backend(self, b: BackendState) -> bool:
        return b.serves_priorities is not None and all(p <= self.critical for p in b.serves_priorities)

    def place(self, request: PlacementRequest, backends: Sequence[BackendState], now: float) -> Placement:
        critical = [b for b in backends if self.is_critical_backend(b)]
        bulk = [b for b in backends if not self.is_critical_backend(b)]
        capped = [_with_cap(b, self.critical_cap) for b in critical]
        if request.priority <= self.critical:
            first = self.inner.place(request, capped, now)
            if first.backend is not None:
                return _relabel(self, first, bulk, "critical backend under its cap")
            spill = self.inner.place(request, bulk, now)
            return _relabel(self, spill, capped, "critical backends full: spill to bulk", spilled=True)
        placed = self.inner.place(request, bulk, now)
        return _relabel(self, placed, critical, "bulk backend")


def _with_cap(b: BackendState, cap: int) -> BackendState:
    effective = cap if b.concurrency_cap is None else min(cap, b.concurrency_cap)
    return replace(b, concurrency_cap=effective)


def _relabel(
    placer: QosAware, p: Placement, others: list[BackendState], why: str, spilled: bool = False
) -> Placement:
    def explain() -> tuple[str, tuple[CandidateScore, ...]]:
        note = "full (critical cap)" if spilled else "reserved for another class"
        extra = tuple(CandidateScore(b.name, _UNSCORED, False, note) for b in others)
        candidates = tuple(sorted(p.candidates + extra, key=lambda c: c.backend))
        return (f"{why}; {p.reason}" if p.backend else p.reason), candidates

    return Placement(p.backend, placer.name, explain=explain)
