"""API keys: who may use the proxy, how urgent each key may ask to be, and how fast it may go."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

from triage_router.policies.rate_limit import KeyRateLimit, RateDecision
from triage_router.router.config import ApiKeyConfig
from triage_router.router.errors import RateLimited, Unauthorized
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
                 metrics: RouterMetrics | None = None) -> None:
        self.metrics = metrics
        # By the key's SHA-256 (config_loader.py keeps nothing else): a key is never held as written.
        self._by_hash = {entry.key_sha256: entry for entry in keys}
        self.clock = clock
        now = clock()
        self._limits = {entry.key_sha256: KeyRateLimit(entry.requests_per_minute, entry.tokens_per_minute, now)
                        for entry in keys if entry.requests_per_minute or entry.tokens_per_minute}

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def admit(self, entry: ApiKeyConfig | None) -> None:
        """A request with `entry` (authenticate's answer) within the key's rate limits; else 429.
        Apart from authenticate, so that a refused request is still logged by its key's name."""
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None:
            decision = limit.admit(self.clock())
            if not decision.allowed:
                raise RateLimited(f"this key's {decision.limited_by} per minute are used up",
                                  retry_after_s=decision.retry_after_s, limit_headers=_limit_headers(decision))

    def account(self, entry: ApiKeyConfig | None, model: str, usage_payload: bytes) -> dict[str, int]:
        """The usage an answer reports: charged to the key's tokens per minute, and counted per
        key name and model for chargeback (`triage_tokens`). Returns the tokens by kind
        ("prompt", "completion"), empty when the payload reports none."""
        counts: dict[str, int] = {}
        for name, value in _TOKENS.findall(usage_payload):
            counts.setdefault(_KINDS[name], int(value))
        if not counts:
            return counts
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None:
            limit.charge_tokens(sum(counts.values()), self.clock())
        if self.metrics is not None:
            key = "anonymous" if entry is None else key_name(entry)
            for kind, tokens in counts.items():
                self.metrics.child(self.metrics.tokens, key, model, kind).inc(tokens)
        return counts

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


def tenant_of(api_key: ApiKeyConfig | None, headers: dict[str, str], tenant_header: str) -> str:
    """Who a request belongs to, for fair share, rules and length prediction: the API key's name;
    an unnamed key's fingerprint; with no key, the tenant header; else "" (anonymous). Never the
    raw key, which would then sit in memory tables and debug output, and never a header a keyed
    client could set to pass for another tenant."""
    if api_key is not None:
        return key_name(api_key)
    return headers.get(tenant_header, "")[:MAX_TENANT_CHARS] if tenant_header else ""


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
