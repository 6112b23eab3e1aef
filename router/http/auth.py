"""API keys: who may use the proxy, and how urgent each key may ask to be."""

from __future__ import annotations

import hashlib

from triage_router.router.config import ApiKeyConfig
from triage_router.router.errors import Unauthorized

# A tenant header's value is a label in tables and metrics: bounded.
MAX_TENANT_CHARS = 128


class ApiKeys:
    """With no keys configured the proxy is open; otherwise every request needs a known key."""

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._by_key = {entry.key: entry for entry in keys}

    @property
    def enabled(self) -> bool:
        return bool(self._by_key)

    def authenticate(self, headers: dict[str, str]) -> ApiKeyConfig | None:
        if not self._by_key:
            return None
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if not authorization and headers.get("x-api-key"):  # Anthropic's clients
            scheme, token = "bearer", headers["x-api-key"]
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)")
        entry = self._by_key.get(token.strip())
        if entry is None:
            raise Unauthorized("incorrect API key provided")
        return entry


def tenant_of(api_key: ApiKeyConfig | None, headers: dict[str, str], tenant_header: str) -> str:
    """Who a request belongs to, for fair share, rules and length prediction: the API key's name;
    an unnamed key's fingerprint; with no key, the tenant header; else "" (anonymous). Never the
    raw key, which would then sit in memory tables and debug output, and never a header a keyed
    client could set to pass for another tenant."""
    if api_key is not None:
        return api_key.name or "key-" + hashlib.blake2b(api_key.key.encode(), digest_size=6).hexdigest()
    return headers.get(tenant_header, "")[:MAX_TENANT_CHARS] if tenant_header else ""
