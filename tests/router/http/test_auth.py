from __future__ import annotations

import pytest

from triage_router.router.config_loader import parse_config
from triage_router.router.errors import RateLimited, Unauthorized
from triage_router.router.http.auth import ApiKeys, usage_counts

BACKEND = '[[backends]]\nname = "a"\nurl = "http://a"\n'


def _keys(text: str) -> list:  # type: ignore[type-arg]
    return parse_config(BACKEND + text).api_keys


def _key(name: str, per_minute: int) -> str:
    return f'[[api_keys]]\nkey = "sk-{name}"\nname = "{name}"\nrequests_per_minute = {per_minute}\n'


@pytest.mark.anyio
async def test_a_reload_keeps_the_minute_used_by_a_key_whose_limit_is_unchanged() -> None:
    now = [0.0]
    keys = ApiKeys(_keys(_key("team", 2) + _key("other", 2)), clock=lambda: now[0])
    for name in ("team", "team", "other", "other"):
        await keys.admit(keys.authenticate({"authorization": f"Bearer sk-{name}"}))
    keys.reconfigure(_keys(_key("team", 2) + _key("other", 5) + _key("new", 1)))
    with pytest.raises(RateLimited):  # unchanged: still used up, a reload is no fresh allowance
        await keys.admit(keys.authenticate({"authorization": "Bearer sk-team"}))
    await keys.admit(keys.authenticate({"authorization": "Bearer sk-other"}))  # a new limit starts afresh
    await keys.admit(keys.authenticate({"authorization": "Bearer sk-new"}))
    keys.reconfigure(_keys(_key("new", 1)))
    with pytest.raises(Unauthorized):  # a key taken out of the config is refused at once
        keys.authenticate({"authorization": "Bearer sk-team"})


def test_usage_is_read_from_the_last_usage_object_unless_it_lacks_a_kind() -> None:
    # Token counts before the usage object (a tool call's arguments, say) are not usage.
    answer = b'{"choices":[{"message":{"content":"\\"prompt_tokens\\": 99"}}],' \
             b'"usage":{"prompt_tokens":5,"completion_tokens":17,"total_tokens":22}}'
    assert usage_counts(answer) == {"prompt": 5, "completion": 17}
    # A stream's tail whose last usage has only the output: the earlier input count still counts.
    tail = b'data: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}\n\n' \
           b'data: {"type":"message_delta","usage":{"output_tokens":15}}\n\n'
    assert usage_counts(tail) == {"prompt": 25, "completion": 15}
    assert usage_counts(b'{"choices":[]}') == {}
