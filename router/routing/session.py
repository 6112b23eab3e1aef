"""The session a request belongs to: what keeps a conversation on the backend caching it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def session_of(headers: Mapping[str, str], request: object, header: str, fields: Sequence[str]) -> str | None:
    """The session header's value; else the first configured body field the request sets
    (`prompt_cache_key`, `user`), named so that a user id never equals a cache key by chance."""
    if value := headers.get(header):
        return value
    for field in fields:
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return f"{field}:{value}"
    return None
