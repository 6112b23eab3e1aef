"""The health prober against a mocked control-plane client (respx)."""

from __future__ import annotations

import httpx
import pytest
import respx

from triage_router.router.routing.backends import BackendPool
from triage_router.router.config import BackendConfig, UpstreamConfig
from triage_router.router.routing.health import HealthProber


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_down_backend_is_probed_with_backoff_until_it_answers() -> None:
    pool = BackendPool([BackendConfig(name="a", url="http://a.test", api_key="sk-up")])
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    config = UpstreamConfig(probe_initial_interval_s=0.5, probe_max_interval_s=1.5)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("http://a.test/v1/models").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(502), httpx.Response(200)]
        )
        async with httpx.AsyncClient() as client:
            prober = HealthProber(pool, client, config, sleep=fake_sleep)
            backend = pool.backends[0]
            pool.mark_failure(backend, threshold=1)
            assert not backend.healthy
            await prober.wait_until_up("a")
    assert backend.healthy and backend.consecutive_failures == 0
    assert route.call_count == 4
    assert slept == [0.5, 1.0, 1.5]
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-up"


@pytest.mark.anyio
async def test_a_client_error_status_still_means_the_server_is_up() -> None:
    pool = BackendPool([BackendConfig(name="a", url="http://a.test")])
    with respx.mock() as mock:
        mock.get("http://a.test/v1/models").mock(return_value=httpx.Response(401))
        async with httpx.AsyncClient() as client:
            prober = HealthProber(pool, client, UpstreamConfig())
            assert await prober.probe_once(pool.backends[0])
