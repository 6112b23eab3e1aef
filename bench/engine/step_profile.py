"""In-process engine step time at a fixed decode batch, with an optional torch.profiler table.

No HTTP, no detokenizer in the way: B requests with P-token prompts are added, prefilled and
warmed up, then decode steps are timed. The machine is shared, so the step time is reported
as the best and the median of several timed rounds; the best is the figure to compare.

    .venv/bin/python bench/engine/step_profile.py --batch 32 --dtype bfloat16 --threads 2
    .venv/bin/python bench/engine/step_profile.py --batch 32 --profile 5
    .venv/bin/python bench/engine/step_profile.py --prefill 512   # one 512-token prefill step
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from triage_router.engine_server.config import EngineConfig
from triage_router.engine_server.engine import LLMEngine
from triage_router.engine_server.sequence import SamplingParams


def build(args: argparse.Namespace) -> LLMEngine:
    cfg = EngineConfig(model=args.model, dtype=args.dtype, embedding_model=None, num_threads=args.threads)
    return LLMEngine.from_config(cfg)


def add_requests(engine: LLMEngine, batch: int, prompt_len: int, max_tokens: int, tag: str) -> None:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    for i in range(batch):
        # Distinct prompts, so prefix caching shares nothing and every sequence decodes alone.
        engine.add_request(f"{tag}{i}", [100 + (7 * i + j) % 30000 for j in range(prompt_len)], params)


def timed_rounds(engine: LLMEngine, rounds: int, steps: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            engine.step()
        out.append((time.perf_counter() - t) / steps * 1e3)
    return out


def decode(args: argparse.Namespace, engine: LLMEngine) -> None:
    total = args.warmup + args.rounds * args.steps + args.profile
    add_requests(engine, args.batch, args.prompt_len, total + 8, "d")
    # Prefill (chunked under the token budget), then warm up until every sequence decodes.
    while any(not s.output_token_ids for s in engine.seqs.values()):
        engine.step()
    for _ in range(args.warmup):
        engine.step()
    running = len(engine.last_schedule.scheduled) if engine.last_schedule else 0
    ms = timed_rounds(engine, args.rounds, args.steps)
    print(f"decode batch {running}: step best {min(ms):.2f} ms, median {statistics.median(ms):.2f} ms "
          f"({args.rounds} rounds x {args.steps} steps; {args.batch / min(ms) * 1e3:.0f} tok/s at best)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile):
                engine.step()
        print(f"torch.profiler over {args.profile} steps:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def prefill(args: argparse.Namespace, engine: LLMEngine) -> None:
    ms = []
    for r in range(args.rounds + 1):
        add_requests(engine, 1, args.prefill, 1, f"p{r}-")
        t = time.perf_counter()
        engine.step()
        ms.append((time.perf_counter() - t) * 1e3)
        engine.step()  # let it finish and free its blocks
    ms = ms[1:]  # the first one pays one-off allocations
    print(f"prefill {args.prefill} tokens: step best {min(ms):.2f} ms, median {statistics.median(ms):.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", type=int, default=0, help="steps to run under torch.profiler (0: none)")
    p.add_argument("--rows", type=int, default=20, help="rows of the profiler table")
    p.add_argument("--prefill", type=int, default=0, help="time one prefill of this many tokens instead of decode")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = build(args)
    if args.prefill:
        prefill(args, engine)
    else:
        decode(args, engine)


if __name__ == "__main__":
    main()
