"""API keys: who may use the proxy, how urgent each key may ask to be, and how fast it may go."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

from triage_router.policies.rate_limit import KeyRateLimit, RateDecision
from triage_router.router.config import ApiKeyConfig
from triage_router.router.errors import RateLimited, Unauthorized

_TOTAL_TOKENS = re.compile(rb'"total_tokens"\s*:\s*(\d+)')

# A tenant header's value is a label in tables and metrics: bounded.
MAX_TENANT_CHARS = 128


class ApiKeys:
    """With no keys configured the proxy is open; otherwise every request needs a known key."""

    def __init__(self, keys: list[ApiKeyConfig], clock: Callable[[], float] = time.monotonic) -> None:
        # By the key's SHA-256 (config_loader.py keeps nothing else): a key is never held as written.
        self._by_hash = {entry.key_sha256: entry for entry in keys}
        self.clock = clock
        now = clock()
        self._limits = {entry.key_sha256: KeyRateLimit(entry.requests_per_minute, entry.tokens_per_minute, now)
                        for entry in keys if entry.requests_per_minute or entry.tokens_per_minute}

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def admit(self, headers: dict[str, str]) -> ApiKeyConfig | None:
        """The caller's key (None on an open proxy), once it is known and within its rate limits;
        else 401 or 429."""
        entry = self._authenticate(headers)
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None:
            decision = limit.admit(self.clock())
            if not decision.allowed:
                raise RateLimited(f"this key's {decision.limited_by} per minute are used up",
                                  retry_after_s=decision.retry_after_s, limit_headers=_limit_headers(decision))
        return entry

    def charge(self, entry: ApiKeyConfig | None, usage_payload: bytes) -> None:
        """Charge a key's tokens per minute with the usage an answer reports."""
        limit = self._limits.get(entry.key_sha256) if entry is not None else None
        if limit is not None and (match := _TOTAL_TOKENS.search(usage_payload)):
            limit.charge_tokens(int(match.group(1)), self.clock())

    def _authenticate(self, headers: dict[str, str]) -> ApiKeyConfig | None:
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


def tenant_of(api_key: ApiKeyConfig | None, headers: dict[str, str], tenant_header: str) -> str:
    """Who a request belongs to, for fair share, rules and length prediction: the API key's name;
    an unnamed key's fingerprint; with no key, the tenant header; else "" (anonymous). Never the
    raw key, which would then sit in memory tables and debug output, and never a header a keyed
    client could set to pass for another tenant."""
    if api_key is not None:
        return api_key.name or "key-" + api_key.key_sha256[:12]
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
