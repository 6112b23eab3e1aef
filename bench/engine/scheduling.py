"""Engine scheduling benchmarks on the real model, in-process (no HTTP):

- priority: the engine saturated by priority-4 requests, then priority-0 requests arrive.
  Reports their TTFT in engine steps after arrival (target: <= 2 plus their own prefill
  chunks) and in milliseconds, and the same for the p4 requests.
- prefix: requests sharing a ~1,000-token system prompt, with and without prefix caching.
  Reports prefill tokens computed and TTFT.

    .venv/bin/python bench/engine/scheduling.py --scenario priority,prefix
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from triage_router.engine_server.config import EngineConfig  # noqa: E402
from triage_router.engine_server.engine import LLMEngine  # noqa: E402
from triage_router.engine_server.sequence import SamplingParams  # noqa: E402


def chat(engine: LLMEngine, system: str | None, user: str) -> list[int]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


def drain(engine: LLMEngine) -> None:
    while engine.has_work():
        engine.step()


def priority(args) -> dict:
    engine = LLMEngine.from_config(EngineConfig(dtype=args.dtype, max_num_seqs=args.batch, kv_cache_gib=0.5,
                                                embedding_model=None, num_threads=args.num_threads))
    bulk = [engine.add_request(f"bulk{i}", chat(engine, None, f"Tell me a long story about the number {i}."),
                               SamplingParams(temperature=0, max_tokens=64, ignore_eos=True), priority=4)
            for i in range(args.batch * 2)]
    for _ in range(args.warm_steps):  # saturated: every slot busy, the rest waiting
        engine.step()
    assert engine.scheduler.num_running == args.batch
    urgent = []
    for i in range(args.urgent):
        urgent.append(engine.add_request(f"urgent{i}", chat(engine, None, f"What is {i} plus {i}?"),
                                         SamplingParams(temperature=0, max_tokens=8), priority=0))
        for _ in range(3):  # a few steps between arrivals
            engine.step()
    drain(engine)
    steps = [s.first_token_step - s.arrival_step for s in urgent]
    ttft = [(s.first_token_time - s.arrival_time) * 1e3 for s in urgent]
    chunks = [-(-s.num_prompt_tokens // engine.config.max_num_batched_tokens) for s in urgent]
    return {
        "batch": args.batch, "urgent_requests": args.urgent,
        "p0_ttft_steps": steps, "p0_prefill_chunks": chunks, "p0_ttft_ms_p50": statistics.median(ttft),
        "p0_ttft_ms_max": max(ttft),
        "p4_preemptions": sum(s.num_preemptions for s in bulk),
        "preemptions_by_mode": {m.value: n for m, n in engine.scheduler.num_preemptions.items()},
    }


def prefix(args) -> dict:
    system = " ".join(f"Rule {i}: answer politely, cite sources, and keep answers short." for i in range(90))
    out = {}
    for caching in (False, True):
        engine = LLMEngine.from_config(EngineConfig(dtype=args.dtype, enable_prefix_caching=caching, kv_cache_gib=0.5,
                                                    embedding_model=None, num_threads=args.num_threads))
        prompts = [chat(engine, system, f"Question {i}: what is {i} times {i}?") for i in range(args.prefix_requests)]
        ttft = []
        for i, ids in enumerate(prompts):  # one at a time: TTFT is the prefill itself
            seq = engine.add_request(f"q{i}", ids, SamplingParams(temperature=0, max_tokens=1))
            drain(engine)
            ttft.append((seq.first_token_time - seq.arrival_time) * 1e3)
        computed = engine.kv.prefix_queries - engine.kv.prefix_hits
        out["cached" if caching else "uncached"] = {
            "prompt_tokens": len(prompts[0]), "prefill_tokens_computed": computed,
            "prefix_hit_tokens": engine.kv.prefix_hits,
            "ttft_ms_first": ttft[0], "ttft_ms_p50_rest": statistics.median(ttft[1:]),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="priority,prefix")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warm-steps", type=int, default=40)
    p.add_argument("--urgent", type=int, default=4)
    p.add_argument("--prefix-requests", type=int, default=6)
    p.add_argument("--num-threads", type=int, default=None)
    args = p.parse_args()
    for name in args.scenario.split(","):
        result = {"priority": priority, "prefix": prefix}[name](args)
        print(name, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
