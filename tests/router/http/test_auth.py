from __future__ import annotations

import pytest

from triage_router.router.config_loader import parse_config
from triage_router.router.errors import RateLimited, Unauthorized
from triage_router.router.http.auth import ApiKeys

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
