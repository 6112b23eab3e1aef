"""Per-key rate limits kept in Redis, so that every router replica draws on the same buckets.

The buckets are the ones `triage_router.policies.rate_limit` keeps in memory (a request taken on
arrival, tokens charged from the answer's usage, refilled continuously over a minute), updated
by one Lua script per call: atomic across replicas, on Redis's own clock, one round trip. A key
is stored under its hash's first 16 hex digits, never as written, and expires once its buckets
would be full again. When Redis does not answer within `timeout_s`, the caller falls back to its
own in-memory buckets (router/http/auth.py) and this logs it, at most once a minute.

Needs the `redis` package (`pip install 'triage-router[redis]'`), imported only when a Redis URL
is configured.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from triage_router.policies.rate_limit import RateDecision
from triage_router.router.config import ApiKeyConfig, ConfigError

log = logging.getLogger("triage.ratelimit")

# ARGV: operation ("admit" or "charge"), requests per minute, tokens per minute, tokens to charge.
# Returns {allowed, ms until a request fits, ms until tokens fit, request level, token level}.
_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local saved = redis.call('HMGET', KEYS[1], 'r', 't', 'at')
local function refilled(per_minute, level)
  if per_minute <= 0 then return 0 end
  if level == false then return per_minute end
  local since = math.max(now - tonumber(saved[3]), 0)
  return math.min(per_minute, tonumber(level) + since * per_minute / 60000)
end
local r, t = refilled(rpm, saved[1]), refilled(tpm, saved[2])
local allowed, wait_r, wait_t = 1, 0, 0
if ARGV[1] == 'admit' then
  if rpm > 0 and r < 1 then wait_r = (1 - r) * 60000 / rpm end
  if tpm > 0 and t < 0 then wait_t = -t * 60000 / tpm end
  if wait_r > 0 or wait_t > 0 then allowed = 0 elseif rpm > 0 then r = r - 1 end
elseif tpm > 0 then
  t = t - cost
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'at', now)
local full_r = rpm > 0 and (rpm - r) * 60000 / rpm or 0
local full_t = tpm > 0 and (tpm - t) * 60000 / tpm or 0
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(full_r, full_t)) + 1000)
return {allowed, math.ceil(wait_r), math.ceil(wait_t), tostring(r), tostring(t)}
"""


class SharedRateLimits:
    def __init__(self, url: str, timeout_s: float = 0.25, prefix: str = "triage:ratelimit:") -> None:
        try:
            import redis.asyncio
            import redis.exceptions
        except ImportError:
            raise ConfigError("a Redis URL for rate limits needs the redis package: "
                              "pip install 'triage-router[redis]'") from None
        self._client: Any = redis.asyncio.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self._client.register_script(_SCRIPT)
        self._prefix = prefix
        self._failures = (redis.exceptions.RedisError, OSError, TimeoutError)
        self._warned_at = -math.inf

    async def admit(self, entry: ApiKeyConfig) -> RateDecision | None:
        """Take one request from the key's shared buckets; None when Redis did not answer."""
        reply = await self._call(entry, "admit", 0)
        if reply is None:
            return None
        allowed, wait_r_ms, wait_t_ms, requests, tokens = reply
        rpm, tpm = entry.requests_per_minute, entry.tokens_per_minute
        wait_s = max(int(wait_r_ms), int(wait_t_ms)) / 1000.0
        limited_by = "" if allowed else ("requests" if int(wait_r_ms) >= int(wait_t_ms) else "tokens")
        return RateDecision(bool(allowed), 0 if allowed else max(1, math.ceil(wait_s)), limited_by,
                            _state(rpm, float(requests)), _state(tpm, float(tokens)))

    async def charge(self, entry: ApiKeyConfig, tokens: int) -> bool:
        """Charge an answer's tokens; False when Redis did not answer."""
        return await self._call(entry, "charge", tokens) is not None

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, entry: ApiKeyConfig, operation: str, tokens: int) -> list[Any] | None:
        key = self._prefix + entry.key_sha256[:16]
        try:
            reply: list[Any] = await self._script(keys=[key], args=[operation, entry.requests_per_minute,
                                                                     entry.tokens_per_minute, tokens])
        except self._failures as error:
            now = time.monotonic()
            if now - self._warned_at >= 60.0:
                self._warned_at = now
                log.warning("Redis for rate limits did not answer (%s); each replica limits on its own meanwhile",
                            error)
            return None
        return reply


def _state(per_minute: int, level: float) -> tuple[int, int, float] | None:
    """(limit, remaining, seconds until full) for the x-ratelimit-* headers, as the local buckets give it."""
    if not per_minute:
        return None
    return per_minute, max(int(level), 0), (per_minute - level) * 60.0 / per_minute
