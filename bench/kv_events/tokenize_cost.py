#!/usr/bin/env python3
"""What matching by KV events costs the router per request: rendering the chat template,
encoding the prompt (with the piece cache, and without it for comparison), hashing its blocks,
and looking them up in a backend's index.

    .venv/bin/python bench/kv_events/tokenize_cost.py [--model-dir DIR] [--block-size 16]

The workload is bench/fleet's affinity workload (12 tenants, ~1,000-token system prompts, 96
requests in arrival order), so the piece cache warms as it would in the router: each tenant's
first request pays for its system prompt. Timed single-threaded, in-process, on whatever else
the machine runs; take the machine's lock for a figure you will record.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fleet import workload  # noqa: E402
from triage_router.policies.kv_events import BlockStored  # noqa: E402
from triage_router.router.routing.kv_events.block_index import KVBlockIndex  # noqa: E402
from triage_router.router.routing.kv_events.prompt_tokens import PromptTokenizer  # noqa: E402


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"| {name} | {statistics.mean(ms):.3f} | {ms[len(ms) // 2]:.3f} | {ms[int(len(ms) * 0.99)]:.3f} "
            f"| {ms[-1]:.3f} |")


async def measure(model_dir: Path, block_size: int) -> None:
    requests = workload.build()
    tokenizer = PromptTokenizer(model_dir)
    uncached = PromptTokenizer(model_dir)
    index = KVBlockIndex()
    render, encode, whole, hashing, matching, tokens = [], [], [], [], [], []
    for request in requests:
        body = {"model": "smol", "messages": list(request.messages)}
        t0 = time.perf_counter()
        text = tokenizer.render(body)
        t1 = time.perf_counter()
        prompt = await tokenizer.encode(text)
        t2 = time.perf_counter()
        hashes = prompt.block_hashes(block_size, 4096)
        t3 = time.perf_counter()
        index.match(hashes)
        t4 = time.perf_counter()
        uncached._cache.clear()  # noqa: SLF001 - the same work with no piece cache
        u0 = time.perf_counter()
        await uncached.encode(text)
        whole.append(time.perf_counter() - u0)
        render.append(t1 - t0), encode.append(t2 - t1), hashing.append(t3 - t2), matching.append(t4 - t3)
        tokens.append(len(prompt))
        # The backend then holds this prompt: the next lookups walk real chains.
        ids = [int.from_bytes(prompt.packed[i:i + 4], "little") for i in range(0, len(prompt) // block_size * block_size * 4, 4)]
        index.apply(BlockStored([hash((request.index, i)) for i in range(len(hashes))], None, ids, block_size,
                                None, "GPU", None))
    total = [a + b + c + d for a, b, c, d in zip(render, encode, hashing, matching)]
    print(f"{len(requests)} requests, prompt tokens mean {statistics.mean(tokens):.0f}, max {max(tokens)}; "
          f"block size {block_size}; tokenizer pieces exact: {tokenizer.splits}\n")
    print("| step | mean ms | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for name, values in (("render the chat template", render), ("encode, piece cache", encode),
                         ("hash the blocks", hashing), ("match in the index", matching),
                         ("**all, per request**", total), ("encode without the cache (for comparison)", whole)):
        print(summary(name, values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="tokenizer directory; default: the converted SmolLM2 our engine uses")
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from triage_router.engine_server.checkpoint import resolve_model_dir

        model_dir = resolve_model_dir("default")
    asyncio.run(measure(model_dir, args.block_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
