"""Per-key rate limits: requests and tokens per minute, as token buckets.

A bucket holds up to `per_minute` units and refills continuously at `per_minute / 60` a second,
so a quick burst gets exactly `per_minute` and a steady client its rate. Requests are taken
when they arrive; tokens (prompt plus completion, known only from the answer's usage) are
charged afterwards, so the token bucket may go below zero and then refuses until it refills.
Pure: every method takes `now` in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class TokenBucket:
    __slots__ = ("capacity", "per_second", "level", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + max(now - self.updated, 0.0) * self.per_second)
        self.updated = max(now, self.updated)

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level

    def take(self, units: float, now: float) -> None:
        self._refill(now)
        self.level -= units

    def seconds_until(self, units: float, now: float) -> float:
        """How long until `units` are available (0 if they are now)."""
        self._refill(now)
        return max(units - self.level, 0.0) / self.per_second


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: int  # 0 when allowed
    limited_by: str  # "requests", "tokens" or ""
    # For the x-ratelimit-* headers, per limit present: (limit, remaining, seconds to full).
    requests: tuple[int, int, float] | None
    tokens: tuple[int, int, float] | None


class KeyRateLimit:
    """One key's limits; 0 means no limit of that kind."""

    def __init__(self, requests_per_minute: int, tokens_per_minute: int, now: float) -> None:
        self.requests = TokenBucket(requests_per_minute, now) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, now) if tokens_per_minute else None

    def admit(self, now: float) -> RateDecision:
        """Take one request if both limits allow it; else say when to come back."""
        wait_requests = self.requests.seconds_until(1, now) if self.requests else 0.0
        # A balance not below zero admits: a request's tokens are not known before its answer.
        wait_tokens = self.tokens.seconds_until(0, now) if self.tokens else 0.0
        allowed = wait_requests == 0.0 and wait_tokens == 0.0
        if allowed and self.requests:
            self.requests.take(1, now)
        limited_by = "" if allowed else ("requests" if wait_requests >= wait_tokens else "tokens")
        return RateDecision(allowed, 0 if allowed else max(1, math.ceil(max(wait_requests, wait_tokens))),
                            limited_by, _state(self.requests, now), _state(self.tokens, now))

    def charge_tokens(self, tokens: int, now: float) -> None:
        if self.tokens is not None and tokens > 0:
            self.tokens.take(tokens, now)


def _state(bucket: TokenBucket | None, now: float) -> tuple[int, int, float] | None:
    if bucket is None:
        return None
    level = bucket.available(now)
    return int(bucket.capacity), max(int(level), 0), (bucket.capacity - level) / bucket.per_second
