from __future__ import annotations

import httpx
import pytest
import respx

from triage_router.router.routing.backends import BackendPool
from triage_router.router.config import BackendConfig
from triage_router.router.routing.load import MetricsScraper
from triage_router.router.routing.load_report import parse_metrics
from tests.router.routing.test_load_report import NEW_NAMES, OLD_NAMES

def test_a_reading_goes_stale() -> None:
    pool = BackendPool([BackendConfig(name="a", url="http://a.test")])
    backend = pool.backends[0]
    backend.load_report = parse_metrics(NEW_NAMES, read_at=10.0)
    assert backend.fresh_report(10.5, stale_s=1.0) is not None
    assert backend.fresh_report(11.5, stale_s=1.0) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_scraper_reads_detects_restarts_and_skips_backends_without_metrics() -> None:
    pool = BackendPool([BackendConfig(name="a", url="http://a.test"), BackendConfig(name="b", url="http://b.test")])
    a, b = pool.backends
    restarted: list[str] = []
    updates: list[int] = []
    now = [100.0]
    with respx.mock() as mock:
        route_a = mock.get("http://a.test/metrics").mock(side_effect=[
            httpx.Response(200, text=NEW_NAMES),
            httpx.Response(200, text=OLD_NAMES),  # queries went from 1000 to 10: a restart
        ])
        route_b = mock.get("http://b.test/metrics").mock(return_value=httpx.Response(404))
        async with httpx.AsyncClient() as client:
            scraper = MetricsScraper(pool, client, lambda backend: 0.5, 0.1, on_update=lambda: updates.append(1),
                                     on_restart=lambda backend: restarted.append(backend.name), clock=lambda: now[0])
            await scraper.scrape_due()
            assert a.load_report is not None and a.load_report.running == 5.0
            now[0] += 1.0
            await scraper.scrape_due()
    assert restarted == ["a"] and a.load_report.running == 1.0
    assert route_a.call_count == 2
    assert route_b.call_count == 1 and b.load_report is None  # 404: not asked again for a while
    assert len(updates) == 2


@pytest.mark.anyio
async def test_each_backend_is_read_at_its_own_interval() -> None:
    pool = BackendPool([BackendConfig(name="fast", url="http://fast.test"),
                        BackendConfig(name="slow", url="http://slow.test")])
    intervals = {"fast": 0.1, "slow": 1.0}
    updates: list[int] = []
    now = [0.0]
    with respx.mock() as mock:
        fast = mock.get("http://fast.test/metrics").mock(return_value=httpx.Response(200, text=NEW_NAMES))
        slow = mock.get("http://slow.test/metrics").mock(return_value=httpx.Response(200, text=NEW_NAMES))
        async with httpx.AsyncClient() as client:
            scraper = MetricsScraper(pool, client, lambda backend: intervals[backend.name], 0.1,
                                     on_update=lambda: updates.append(1), on_restart=lambda backend: None,
                                     clock=lambda: now[0])
            for tick in range(20):  # two seconds of ticks
                now[0] = tick * 0.1 + 1e-9 * tick  # just past each tick, as a real loop wakes
                await scraper.scrape_due()
            assert fast.call_count == 20 and slow.call_count == 2  # at 0.0 and 1.0
            # An interval that shrinks takes effect at once: the slow backend became busy.
            intervals["slow"] = 0.1
            now[0] = 2.0
            await scraper.scrape_due()
    assert slow.call_count == 3
    assert len(updates) == 21  # one per tick on which anything was read
