"""API keys: who may use the proxy, how urgent each key may ask to be, and how fast it may go."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable

from triage_router.policies.rate_limit import KeyRateLimit, RateDecision
from triage_router.router.config import ApiKeyConfig, RateLimitConfig
from triage_router.router.errors import RateLimited, Unauthorized
from triage_router.router.http.shared_rate_limit import SharedRateLimits
from triage_router.router.metrics import RouterMetrics

_TOKENS = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)"\s*:\s*(\d+)')
# How usage counts are named: OpenAI's, or the Responses and Messages APIs'.
_KINDS = {b"prompt_tokens": "prompt", b"input_tokens": "prompt", b"completion_tokens": "completion",
          b"output_tokens": "completion"}

# A tenant header's value is a label in tables and metrics: bounded.
MAX_TENANT_CHARS = 128


class ApiKeys:
    """With no keys configured the proxy is open; otherwise every request needs a known key."""

    def __init__(self, keys: list[ApiKeyConfig], clock: Callable[[], float] = time.monotonic,
                 metrics: RouterMetrics | None = None, rate_limits: RateLimitConfig | None = None) -> None:
        self.metrics = metrics
        self.clock = clock
        rate_limits = rate_limits or RateLimitConfig()
        # Exact across replicas through Redis when configured; the local buckets, each a
        # replica's share, decide without it and whenever it does not answer.
        self.shared = SharedRateLimits(rate_limits.redis_url, rate_limits.redis_timeout_s) \
            if rate_limits.redis_url else None
        self._share = rate_limits.replicas
        self._charging: set[asyncio.Task[bool]] = set()
        self._by_hash: dict[str, ApiKeyConfig] = {}
        self._limits: dict[str, KeyRateLimit] = {}
        self.reconfigure(keys)

    def reconfigure(self, keys: list[ApiKeyConfig]) -> None:
        """Take a (reloaded) key list. A key whose limits did not change keeps what it has used
        this minute: a reload must not hand every key a fresh allowance."""
        now = self.clock()
        # By the key's SHA-256 (config_loader.py keeps nothing else): a key is never held as written.
        by_hash = {entry.key_sha256: entry for entry in keys}
        limits: dict[str, KeyRateLimit] = {}
        for entry in keys:
            if not (entry.requests_per_minute or entry.tokens_per_minute):
                continue
            old_entry, old_limit = self._by_hash.get(entry.key_sha256), self._limits.get(entry.key_sha256)
            unchanged = old_entry is not None and old_limit is not None and (
                (old_entry.requests_per_minute, old_entry.tokens_per_minute)
                == (entry.requests_per_minute, entry.tokens_per_minute))
            limits[entry.key_sha256] = old_limit if unchanged and old_limit is not None else KeyRateLimit(
                _share_of(entry.requests_per_minute, self._share), _share_of(entry.tokens_per_minute, self._share), now)
        self._by_hash, self._limits = by_hash, limits

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    async def admit(self, entry: ApiKeyConfig | None) -> None:
        """A request with `entry` (authenticate's answer) within the key's rate limits; else 429.
        Apart from authenticate, so that a refused request is still logged by its key's name."""
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None:
            assert entry is not None
            decision = await self.shared.admit(entry) if self.shared is not None else None
            if decision is None:
                decision = limit.admit(self.clock())
            if not decision.allowed:
                raise RateLimited(f"this key's {decision.limited_by} per minute are used up",
                                  retry_after_s=decision.retry_after_s, limit_headers=_limit_headers(decision))

    def account(self, entry: ApiKeyConfig | None, model: str, usage_payload: bytes) -> dict[str, int]:
        """The usage an answer reports: charged to the key's tokens per minute, and counted per
        key name and model for chargeback (`triage_tokens`). Returns the tokens by kind
        ("prompt", "completion"), empty when the payload reports none."""
        counts = usage_counts(usage_payload)
        if not counts:
            return counts
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None:
            assert entry is not None
            self._charge(entry, limit, sum(counts.values()))
        if self.metrics is not None:
            key = "anonymous" if entry is None else key_name(entry)
            for kind, tokens in counts.items():
                self.metrics.child(self.metrics.tokens, key, model, kind).inc(tokens)
        return counts

    def _charge(self, entry: ApiKeyConfig, limit: KeyRateLimit, tokens: int) -> None:
        if self.shared is None:
            limit.charge_tokens(tokens, self.clock())
            return

        async def charge_shared() -> bool:
            assert self.shared is not None
            charged = await self.shared.charge(entry, tokens)
            if not charged:
                limit.charge_tokens(tokens, self.clock())
            return charged

        # Off the answer's path: the client has its usage already.
        task = asyncio.get_running_loop().create_task(charge_shared())
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)

    async def close(self) -> None:
        if self._charging:
            await asyncio.gather(*self._charging, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()

    def authenticate(self, headers: dict[str, str]) -> ApiKeyConfig | None:
        """The caller's key (None on an open proxy); 401 for a missing or unknown one."""
        if not self._by_hash:
            return None
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if not authorization and headers.get("x-api-key"):  # Anthropic's clients
            scheme, token = "bearer", headers["x-api-key"]
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)")
        entry = self._by_hash.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if entry is None:
            raise Unauthorized("incorrect API key provided")
        return entry


def key_name(api_key: ApiKeyConfig) -> str:
    """How a key is named in metrics, logs and traces: its configured name, else its hash's first
    12 hex digits; never the key itself."""
    return api_key.name or "key-" + api_key.key_sha256[:12]


def usage_counts(payload: bytes) -> dict[str, int]:
    """The tokens by kind ("prompt", "completion") that `payload`'s usage reports: from its last
    `"usage"` object (an answer's usage is at its end; the scan then covers a tenth of the
    bytes, and counts that only look like usage earlier on, in a message's text, say, are
    not taken), a kind it lacks from the first count of that kind in the payload (a stream's
    last usage may report only the output, as Anthropic's message_delta does)."""
    start = payload.rfind(b'"usage"')
    counts = _counts_in(payload, start) if start >= 0 else {}
    if len(counts) < 2:
        for kind, tokens in _counts_in(payload, 0).items():
            counts.setdefault(kind, tokens)
    return counts


def _counts_in(payload: bytes, start: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, value in _TOKENS.findall(payload, start):
        counts.setdefault(_KINDS[name], int(value))
    return counts


def tenant_of(api_key: ApiKeyConfig | None, headers: dict[str, str], tenant_header: str) -> str:
    """Who a request belongs to, for fair share, rules and length prediction: the API key's name;
    an unnamed key's fingerprint; with no key, the tenant header; else "" (anonymous). Never the
    raw key, which would then sit in memory tables and debug output, and never a header a keyed
    client could set to pass for another tenant."""
    if api_key is not None:
        return key_name(api_key)
    return headers.get(tenant_header, "")[:MAX_TENANT_CHARS] if tenant_header else ""


def _share_of(per_minute: int, replicas: int) -> int:
    """One replica's share of a limit (at least 1, so that a set limit never becomes none)."""
    return max(1, per_minute // replicas) if per_minute else 0


def _limit_headers(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens}."""
    head = []
    for kind, state in (("requests", decision.requests), ("tokens", decision.tokens)):
        if state is not None:
            limit, remaining, reset_s = state
            head += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                     (f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()),
                     (f"x-ratelimit-reset-{kind}".encode(), f"{reset_s:.3f}s".encode())]
    return head
