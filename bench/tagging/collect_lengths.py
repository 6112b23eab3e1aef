"""Serve the evaluation prompts with a real model and record how long each answer was.

Every prompt of tests/data/priority_prompts.jsonl goes to an OpenAI-compatible server as a chat
request (greedy, max_tokens capped), CONCURRENCY at a time; the completion token count and the
finish reason are written one JSON object a line. bench/tagging/evaluate_length.py reads them.

    python -m triage_router.engine_server --model default --port 8311 &
    python bench/tagging/collect_lengths.py --url http://127.0.0.1:8311 --model SmolLM2-135M-Instruct \
        --out bench/results/lengths-smollm2.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "priority_prompts.jsonl"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    records = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    gate = asyncio.Semaphore(args.concurrency)
    results: list[dict[str, object]] = [{}] * len(records)
    started = time.perf_counter()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            body = {"model": args.model, "messages": [{"role": "user", "content": records[i]["text"]}],
                    "max_tokens": args.max_tokens, "temperature": 0}
            answer = (await client.post(f"{args.url}/v1/chat/completions", json=body)).json()
            usage = answer["usage"]
            results[i] = {"index": i, "priority": records[i]["priority"], "category": records[i]["category"],
                          "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                          "finish_reason": answer["choices"][0]["finish_reason"], "max_tokens": args.max_tokens}
            done = sum(1 for r in results if r)
            if done % 20 == 0:
                print(f"{done}/{len(records)} after {time.perf_counter() - started:.0f}s", flush=True)

    async with httpx.AsyncClient(timeout=3600) as client:
        await asyncio.gather(*(one(client, i) for i in range(len(records))))
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in results))
    tokens = sum(int(r["completion_tokens"]) for r in results)  # type: ignore[call-overload]
    print(f"{tokens} completion tokens in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    asyncio.run(main())
