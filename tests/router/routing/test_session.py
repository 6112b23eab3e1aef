from __future__ import annotations

from triage_router.router.api_types import decode_request
from triage_router.router.routing.session import session_of

FIELDS = ["prompt_cache_key", "user"]


def _chat(**extra: str) -> object:
    body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]' + "".join(
        f', "{k}": "{v}"' for k, v in extra.items()) + "}"
    return decode_request("chat", body.encode())


def test_the_header_wins_then_prompt_cache_key_then_user() -> None:
    both = _chat(prompt_cache_key="k", user="u")
    assert session_of({"x-session-id": "s"}, both, "x-session-id", FIELDS) == "s"
    assert session_of({}, both, "x-session-id", FIELDS) == "prompt_cache_key:k"
    assert session_of({}, _chat(user="u"), "x-session-id", FIELDS) == "user:u"
    assert session_of({}, _chat(user="k"), "x-session-id", FIELDS) != session_of({}, _chat(prompt_cache_key="k"),
                                                                               "x-session-id", FIELDS)
    assert session_of({}, both, "x-session-id", []) is None
    assert session_of({}, _chat(), "x-session-id", FIELDS) is None
