"""A backend's load as its Prometheus /metrics report it, and the parser of that text.

vLLM renamed its metrics between versions; both spellings are read, and our engine exports
the new ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries",
            "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries")
_HITS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits",
         "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits")
_CACHE_CONFIG = "vllm:cache_config_info"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class LoadReport:
    running: float = 0.0
    waiting: float = 0.0
    # Fraction of KV blocks in use, 0..1 (vLLM's "perc" metrics are fractions too).
    kv_usage: float = 0.0
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    # From vllm:cache_config_info (num_gpu_blocks × block_size), when reported.
    kv_capacity_tokens: int | None = None
    read_at: float = 0.0
    # Whether the text had vLLM's running gauge at all: a /metrics of some other server has not,
    # and its zeros say nothing about load.
    reports_load: bool = True


def parse_metrics(text: str, read_at: float) -> LoadReport:
    """Sum each wanted metric over its label sets (one per model or engine)."""
    sums: dict[str, float] = {}
    capacity: int | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        name_end = brace if 0 <= brace < space else space
        name = line[:name_end]
        if name == _CACHE_CONFIG:
            labels = dict(_LABEL.findall(line[brace : line.rfind("}")]))
            try:
                capacity = int(labels["num_gpu_blocks"]) * int(labels["block_size"])
            except (KeyError, ValueError):
                pass
            continue
        try:
            value = float(line.rsplit(" ", 1)[-1] if brace < 0 else line[line.rfind("}") + 1 :].split()[0])
        except (ValueError, IndexError):
            continue
        sums[name] = sums.get(name, 0.0) + value

    def first(names: tuple[str, ...]) -> float:
        return next((sums[n] for n in names if n in sums), 0.0)

    return LoadReport(first(_RUNNING), first(_WAITING), first(_KV_USAGE), first(_QUERIES), first(_HITS), capacity, read_at,
                      reports_load=any(name in sums for name in _RUNNING))
