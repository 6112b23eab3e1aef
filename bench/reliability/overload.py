"""Overload: a flood of priority-4 requests far beyond the admission queue, in front of a saturated
backend, while priority-0 probes arrive. Does every probe get through quickly, does every flood
request get an answer (200, or 429/503 with Retry-After), and do the counts add up?

The backend is bench/scheduling/mixed_burst.py's vLLM-like fake: one request at a time, FCFS,
`--ms-per-token` per token, its queue shown on /metrics. Triage runs with its defaults plus two
API keys (a keyless caller may not claim priority 0): `sk-bulk` sends the flood at priority 4,
`sk-urgent` the probes at priority 0. A concurrent warm-up (`--warmup`) lets Triage learn that
the backend runs one request at a time. Then `--flood` requests are sent at once, and `--probes`
probes `--probe-gap` seconds apart from 1 s into the flood.

    .venv/bin/python bench/reliability/overload.py

Prints a markdown table, writes JSON to bench/results/overload-<UTC timestamp>.json, and exits 1
if a probe failed, a refusal lacked Retry-After, or a request got no answer at all.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduling"))
from mixed_burst import MODEL, RESULTS, FakeVllm, TriageProcess  # noqa: E402

KEYS = '\n[[api_keys]]\nkey = "sk-bulk"\nname = "bulk"\nmax_priority = 4\n' \
       '\n[[api_keys]]\nkey = "sk-urgent"\nname = "urgent"\nmax_priority = 0\n'


async def one(session: ClientSession, url: str, key: str, priority: int, tokens: int) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": tokens, "messages": [{"role": "user", "content": f"p{priority} work"}]}
    headers = {"authorization": f"Bearer {key}", "x-priority": str(priority)}
    started = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
            await response.read()
            return {"status": response.status, "retry_after": response.headers.get("retry-after"),
                    "seconds": time.perf_counter() - started}
    except (ClientError, asyncio.TimeoutError) as error:
        return {"status": None, "error": repr(error), "seconds": time.perf_counter() - started}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = FakeVllm(args.ms_per_token / 1000.0)
    await backend.start()
    with tempfile.TemporaryDirectory() as workdir:
        triage = TriageProcess(backend.url, Path(workdir))
        triage.config_path.write_text(triage.config_path.read_text() + KEYS)
        await triage.start()
        try:
            connector = TCPConnector(limit=0)
            async with ClientSession(connector=connector, timeout=ClientTimeout(total=args.timeout)) as session:
                # Warm-up: enough at once that a /metrics reading (one a second) finds a queue, so
                # that Triage has learned the backend's concurrency before the flood; --warmup 0
                # floods a Triage that has not (see docs/benchmarks.md).
                await asyncio.gather(*(one(session, triage.url, "sk-bulk", 2, args.tokens) for _ in range(args.warmup)))
                await asyncio.sleep(2.0)
                started = time.perf_counter()
                flood = [asyncio.ensure_future(one(session, triage.url, "sk-bulk", 4, args.tokens))
                         for _ in range(args.flood)]
                probes = []
                await asyncio.sleep(1.0)
                for _ in range(args.probes):
                    probes.append(asyncio.ensure_future(one(session, triage.url, "sk-urgent", 0, args.tokens)))
                    await asyncio.sleep(args.probe_gap)
                flood_results = await asyncio.gather(*flood)
                probe_results = await asyncio.gather(*probes)
                elapsed = time.perf_counter() - started
        finally:
            await triage.stop()
            await backend.stop()
            triage_log = list(triage.output)
    statuses = collections.Counter(str(r["status"]) for r in flood_results)
    refusals = [r for r in flood_results if r["status"] in (429, 503)]
    return {
        "date": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "command": "python " + " ".join(sys.argv),
        "flood": args.flood, "probes": args.probes, "warmup": args.warmup, "ms_per_token": args.ms_per_token, "tokens": args.tokens,
        "elapsed_s": elapsed,
        "flood_statuses": dict(statuses),
        "refusals_without_retry_after": sum(1 for r in refusals if not r["retry_after"]),
        "unanswered": sum(1 for r in flood_results + probe_results if r["status"] is None),
        # When each unanswered request failed, seconds after it was sent: when a fault strikes says
        # which of the router's timers or paths it is.
        "unanswered_after_s": sorted(round(r["seconds"], 3) for r in flood_results + probe_results
                                     if r["status"] is None),
        "errors": dict(collections.Counter(r["error"][:120] for r in flood_results + probe_results if "error" in r)),
        "probe_statuses": [r["status"] for r in probe_results],
        "probe_seconds": [r["seconds"] for r in probe_results],
        "service_seconds": args.tokens * args.ms_per_token / 1000.0,
        "triage_log_tail": triage_log,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=1500, help="priority-4 requests sent at once")
    parser.add_argument("--probes", type=int, default=10, help="priority-0 probes")
    parser.add_argument("--probe-gap", type=float, default=0.5, help="seconds between probes")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--ms-per-token", type=float, default=1.0, help="the fake backend's speed")
    parser.add_argument("--timeout", type=float, default=600.0, help="client timeout per request, seconds")
    parser.add_argument("--warmup", type=int, default=150,
                        help="requests sent at once before the flood, to teach Triage the backend's concurrency")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"overload-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    probe_s = result["probe_seconds"]
    print(f"flood of {args.flood} at priority 4, {args.probes} probes at priority 0, backend one request at a "
          f"time ({result['service_seconds'] * 1000:.0f} ms each); {result['elapsed_s']:.1f} s in all\n")
    print("| flood answered 200 | 429 (refused) | 503 (shed) | other | no answer | refusals without Retry-After |")
    print("|---|---|---|---|---|---|")
    s = result["flood_statuses"]
    other = args.flood - sum(s.get(k, 0) for k in ("200", "429", "503", "None"))
    print(f"| {s.get('200', 0)} | {s.get('429', 0)} | {s.get('503', 0)} | {other} | {s.get('None', 0)} "
          f"| {result['refusals_without_retry_after']} |")
    if probe_s:
        print(f"\nprobes: statuses {result['probe_statuses']}; seconds p50 {statistics.median(probe_s):.3f}, "
              f"max {max(probe_s):.3f}")
    print(f"\nwrote {path}")
    ok = (all(status == 200 for status in result["probe_statuses"]) and result["refusals_without_retry_after"] == 0
          and result["unanswered"] == 0 and other == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
