"""Per-key limits shared by router replicas through a real redis-server."""

from __future__ import annotations

import pytest

from tests.fakes.redis_server import redis_server
from triage_router.router.config_loader import parse_config
from triage_router.router.errors import RateLimited
from triage_router.router.http.auth import ApiKeys

KEY = '[[api_keys]]\nkey = "sk-team"\nname = "team"\nrequests_per_minute = 20\ntokens_per_minute = 1000\n'
TEAM = {"authorization": "Bearer sk-team"}


def _replica(url: str, replicas: int = 1) -> ApiKeys:
    config = parse_config(f'[[backends]]\nname = "a"\nurl = "http://a"\n{KEY}'
                          f'[rate_limits]\nredis_url = "{url}"\nreplicas = {replicas}\n')
    return ApiKeys(config.api_keys, rate_limits=config.rate_limits)


async def _allowed(replica: ApiKeys) -> bool:
    try:
        await replica.admit(replica.authenticate(TEAM))
    except RateLimited:
        return False
    return True


@pytest.mark.anyio
async def test_two_replicas_draw_on_one_bucket_exactly() -> None:
    with redis_server() as url:
        one, two = _replica(url), _replica(url)
        try:
            allowed = [await _allowed(replica) for _ in range(20) for replica in (one, two)]
            # 20 a minute between them, not 20 each (each local bucket alone would allow 20).
            assert sum(allowed) == 20 and not any(allowed[20:])
        finally:
            await one.close()
            await two.close()


@pytest.mark.anyio
async def test_tokens_charged_through_one_replica_hold_back_the_other() -> None:
    with redis_server() as url:
        one, two = _replica(url), _replica(url)
        try:
            team = one.authenticate(TEAM)
            await one.admit(team)
            one.account(team, "smol", b'"usage": {"prompt_tokens": 900, "completion_tokens": 300}')
            await one.close()  # waits for the charge, made off the answer's path
            with pytest.raises(RateLimited) as refused:
                await two.admit(two.authenticate(TEAM))
            assert refused.value.status == 429 and "tokens" in str(refused.value)
        finally:
            await two.close()


@pytest.mark.anyio
async def test_without_redis_each_replica_keeps_its_share() -> None:
    with redis_server() as url:
        pass  # started and stopped: nothing listens at `url` any more
    replica = _replica(url, replicas=2)
    try:
        allowed = [await _allowed(replica) for _ in range(20)]
        assert sum(allowed) == 10  # half of 20, as one of two replicas
    finally:
        await replica.close()
