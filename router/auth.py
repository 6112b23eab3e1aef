"""API keys: who may use the proxy, and how urgent each key may ask to be."""

from __future__ import annotations

from triage_router.router.config import ApiKeyConfig
from triage_router.router.errors import Unauthorized


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
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        entry = self._by_key.get(token.strip())
        if entry is None:
            raise Unauthorized("incorrect API key provided")
        return entry
