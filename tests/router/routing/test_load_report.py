from __future__ import annotations

from triage_router.router.routing.load_report import parse_metrics

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
    assert report.reports_load


def test_old_names_are_read_too() -> None:
    report = parse_metrics(OLD_NAMES, read_at=0.0)
    assert (report.running, report.kv_usage, report.prefix_queries, report.prefix_hits) == (1.0, 0.9, 10.0, 4.0)
    assert report.kv_capacity_tokens is None


def test_garbage_is_ignored() -> None:
    report = parse_metrics("vllm:num_requests_running{x=\"1\"} NaNx\nnot a metric\nvllm:num_requests_waiting 2\n", 0.0)
    assert report.running == 0.0 and report.waiting == 2.0


def test_a_page_without_the_running_gauge_reports_no_load() -> None:
    # Another server's /metrics (a proxy's, say): its zeros must not read as an idle vLLM.
    report = parse_metrics("# HELP http_requests_total x\nhttp_requests_total 12\n", 0.0)
    assert not report.reports_load
