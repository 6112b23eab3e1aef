"""Time to first token on one real vLLM-CPU server, sent directly and through Triage, in pairs.

Each of the fleet workload's first `--requests` requests is sent once to warm the prefix cache,
then timed directly and through Triage (which order goes first alternates), one at a time, so
that the difference is what Triage adds to a request and nothing else: no queueing, no
placement, no cache misses.

    .venv/bin/python bench/fleet/ttft_pairs.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402
import run as fleet  # noqa: E402
import workload  # noqa: E402


async def measure(requests: list[workload.Request], direct: str, triage: str) -> dict[str, list[float]]:
    ttft: dict[str, list[float]] = {"direct": [], "triage": []}
    async with aiohttp.ClientSession() as session:
        for i, r in enumerate(requests):
            await fleet.stream_chat(session, direct, fleet.chat_body(r, True), {}, 60)  # warm
            pair = [("direct", direct, {}, True), ("triage", triage, {"x-priority": str(r.priority)}, False)]
            for name, url, headers, with_priority in pair if i % 2 else pair[::-1]:
                out = await fleet.stream_chat(session, url, fleet.chat_body(r, with_priority), headers, 60)
                if out["ttft"] is None:
                    raise SystemExit(f"{name} request {r.index} failed: {out['error']}")
                ttft[name].append(out["ttft"])
    return ttft


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    logs = procs.ROOT / "bench" / "results" / "ttft-pairs-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[procs.Proc] = []
    try:
        server = procs.start_vllm("vllm-0", procs.vllm_model_dir(procs.CACHE / "vllm"), procs.free_port(), "0", logs)
        started.append(server)
        procs.wait_ready(server, "/health", timeout=300)
        config = procs.triage_config([("vllm-0", server.url)], "cache-affinity")
        front = procs.start_triage("triage", config, procs.free_port(), logs)
        started.append(front)
        procs.wait_ready(front, "/health", timeout=60)
        ttft = asyncio.run(measure(workload.build(seed=7)[: args.requests], server.url, front.url))
    finally:
        procs.stop_all(started)
    for name, values in ttft.items():
        print(f"{name}: TTFT p50 {statistics.median(values) * 1000:.1f} ms, mean {statistics.mean(values) * 1000:.1f} ms")
    diffs = sorted((t - d) * 1000 for d, t in zip(ttft["direct"], ttft["triage"]))
    print(f"Triage - direct, per pair: median {statistics.median(diffs):+.1f} ms, "
          f"range {diffs[0]:+.1f} to {diffs[-1]:+.1f} ms ({len(diffs)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
