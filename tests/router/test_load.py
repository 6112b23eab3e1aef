from __future__ import annotations

import httpx
import pytest
import respx

from triage_router.router.backends import BackendPool
from triage_router.router.config import BackendConfig
from triage_router.router.load import MetricsScraper
from triage_router.router.load_report import parse_metrics

NEW_NAMES = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 3.0
vllm:num_requests_running{engine="1",model_name="smol"} 2.0
vllm:num_requests_waiting{engine="0",model_name="smol"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="smol"} 0.42
vllm:prefix_cache_queries_total{engine="0",model_name="smol"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 640.0
vllm:cache_config_info{block_size="128",cache_dtype="auto",enable_prefix_caching="True",num_gpu_blocks="48"} 1.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="smol"} 5.0
"""

OLD_NAMES = """vllm:num_requests_running{model_name="smol"} 1.0
vllm:num_requests_waiting{model_name="smol"} 0.0
vllm:gpu_cache_usage_perc{model_name="smol"} 0.9
vllm:gpu_prefix_cache_queries_total{model_name="smol"} 10.0
vllm:gpu_prefix_cache_hits_total{model_name="smol"} 4.0
"""


def test_new_names_are_summed_over_label_sets() -> None:
    report = parse_metrics(NEW_NAMES, read_at=5.0)
    assert (report.running, report.waiting, report.kv_usage) == (5.0, 7.0, 0.42)
    assert (report.prefix_queries, report.prefix_hits) == (1000.0, 640.0)
    assert report.kv_capacity_tokens == 48 * 128 and report.read_at == 5.0


def test_old_names_are_read_too() -> None:
    report = parse_metrics(OLD_NAMES, read_at=0.0)
    assert (report.running, report.kv_usage, report.prefix_queries, report.prefix_hits) == (1.0, 0.9, 10.0, 4.0)
    assert report.kv_capacity_tokens is None


def test_garbage_is_ignored() -> None:
    report = parse_metrics("vllm:num_requests_running{x=\"1\"} NaNx\nnot a metric\nvllm:num_requests_waiting 2\n", 0.0)
    assert report.running == 0.0 and report.waiting == 2.0


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
