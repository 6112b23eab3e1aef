"""Prometheus text with vLLM's metric names, so the router scrapes us and vLLM alike."""

from __future__ import annotations

from triage_router.engine_server.engine import LLMEngine

_METRICS = [
    # (name, type, help)
    ("vllm:num_requests_running", "gauge", "Number of requests in the running batch."),
    ("vllm:num_requests_waiting", "gauge", "Number of requests waiting, including swapped-out ones."),
    ("vllm:num_requests_swapped", "gauge", "Number of requests whose KV cache is swapped to host memory."),
    ("vllm:kv_cache_usage_perc", "gauge", "Fraction of KV cache blocks in use (1 = full)."),
    ("vllm:prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache."),
    ("vllm:prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache."),
    ("vllm:num_preemptions_total", "counter", "Preemptions, by swap or recompute."),
    ("vllm:prompt_tokens_total", "counter", "Prompt tokens admitted."),
    ("vllm:generation_tokens_total", "counter", "Tokens generated."),
    ("vllm:engine_steps_total", "counter", "Engine steps run."),
]


def snapshot(engine: LLMEngine) -> dict[str, float]:
    """The engine's counters and gauges, taken on the engine's own thread or process: the
    HTTP side renders the latest one without touching engine state."""
    sched, kv = engine.scheduler, engine.kv
    times, runner = engine.step_times, engine.runner
    values: dict[str, float] = {
        "vllm:num_requests_running": sched.num_running,
        "vllm:num_requests_waiting": sched.num_waiting,
        "vllm:num_requests_swapped": sched.num_swapped,
        "vllm:kv_cache_usage_perc": kv.usage(),
        "vllm:prefix_cache_queries_total": kv.prefix_queries,
        "vllm:prefix_cache_hits_total": kv.prefix_hits,
        "vllm:num_preemptions_total": sum(sched.num_preemptions.values()),
        "vllm:prompt_tokens_total": engine.prompt_tokens_total,
        "vllm:generation_tokens_total": engine.generation_tokens_total,
        "vllm:engine_steps_total": engine.num_steps,
    }
    # The step loop's split, for profiling: scheduling and bookkeeping must stay small next
    # to the forward pass.
    phases = {
        "schedule": times.schedule_s,
        "prepare_inputs": runner.prepare_s,
        "forward": runner.forward_s,
        "sample": max(times.execute_s - runner.prepare_s - runner.forward_s, 0.0),
        "postprocess": times.postprocess_s,
    }
    values.update({f"phase:{phase}": seconds for phase, seconds in phases.items()})
    return values


def render(values: dict[str, float], model_name: str) -> str:
    label = model_name.replace("\\", "\\\\").replace('"', '\\"')
    lines = []
    for name, kind, help_text in _METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f'{name}{{model_name="{label}"}} {float(values[name])}')
    lines.append("# HELP triage_engine_step_seconds_total Engine step time by phase.")
    lines.append("# TYPE triage_engine_step_seconds_total counter")
    for key, seconds in values.items():
        if key.startswith("phase:"):
            phase = key.removeprefix("phase:")
            lines.append(f'triage_engine_step_seconds_total{{model_name="{label}",phase="{phase}"}} {seconds}')
    return "\n".join(lines) + "\n"
