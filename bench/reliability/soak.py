"""Soak: `--minutes` of mixed traffic through Triage. Does anything grow, leak or drift with time?

Triage runs with three API keys (alpha: priority 0 allowed, no limit; beta: priority 1, 3,000
requests a minute; gamma: priority 3, 60 requests a minute, which its share of the traffic
exceeds, so it is refused with 429 every minute) in front of common.py's vLLM-like fake (64
requests at a time, `--ms-per-token` 1). An open loop sends `--rate` requests a second, Poisson
arrivals with a seeded mix: key alpha / beta / gamma 40 / 40 / 20%, `x-priority` 0-4 (capped by
the key), half streamed, `max_tokens` 8, 32 or 128, prompts from twenty shared system prompts,
and one stream in ten dropped by its client after three tokens.

Each minute it reads the router's RSS, open file descriptors and threads (/proc/<pid>), its
requests in flight and queued (/metrics; asyncio's own task count is not exposed), and the
minute's latency (end to end, every answered request) and answers. At the end, after
`--settle-s` idle with every client connection closed, it reads them once more.

Checks: no 5xx; every request answered (a stream dropped on purpose aside), and every answer a
200 or gamma's 429 with Retry-After; RSS at the last minute within `--rss-growth` of the first
minute's; open fds at the end within 2 of those before the traffic; nothing in flight or queued
at the end; p50 of the last minute within `--drift` times the first minute's.

    .venv/bin/python bench/reliability/soak.py --minutes 10

Prints a markdown table (one row a minute), writes JSON to bench/results/soak-<UTC timestamp>.json,
exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import StreamingFake, StreamOutcome, post_chat, read_proc, run_header, save_result, stream_chat
from run import fmt, pct
from mixed_burst import MODEL, TriageProcess

KEYS = {"alpha": (0, 0), "beta": (1, 3000), "gamma": (3, 60)}  # name: (max_priority, requests_per_minute)
KEY_WEIGHTS = {"alpha": 0.4, "beta": 0.4, "gamma": 0.2}
RATE_LIMITED = "gamma"
SYSTEM_PROMPTS = [f"You are assistant {i} of the {topic} desk. Answer briefly, politely and in plain words. " * 4
                  for i, topic in enumerate(["billing", "shipping", "returns", "accounts", "outages"] * 4)]


def keys_config() -> str:
    text = ""
    for name, (max_priority, rpm) in KEYS.items():
        text += f'\n[[api_keys]]\nkey = "sk-{name}"\nname = "{name}"\nmax_priority = {max_priority}\n'
        if rpm:
            text += f"requests_per_minute = {rpm}\n"
    return text


def metric_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def fetch_text(session: ClientSession, url: str) -> str:
    async with session.get(url, timeout=ClientTimeout(total=10)) as response:
        return await response.text()


async def one(session: ClientSession, url: str, rng: random.Random, n: int) -> dict[str, Any]:
    key = rng.choices(list(KEY_WEIGHTS), weights=list(KEY_WEIGHTS.values()))[0]
    stream = rng.random() < 0.5
    drop = stream and rng.random() < 0.1
    body = {"model": MODEL, "max_tokens": rng.choice([8, 32, 128]), "stream": stream,
            "messages": [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)},
                         {"role": "user", "content": f"Question {n}: where is my order?"}]}
    headers = {"authorization": f"Bearer sk-{key}", "x-priority": str(rng.randint(0, 4))}
    outcome: StreamOutcome
    if stream:
        outcome = await stream_chat(session, url, body, headers, read_timeout=60.0, drop_after_tokens=3 if drop else None)
    else:
        outcome = await post_chat(session, url, body, headers, timeout=60.0)
    return {"key": key, "stream": stream, "drop": drop, "status": outcome.status, "ending": outcome.ending,
            "done": outcome.done, "retry_after": outcome.retry_after, "error_event": outcome.error_event, "sent_at": outcome.sent_at,
            "seconds": (outcome.ended_at or outcome.sent_at) - outcome.sent_at, "error": outcome.error}


def answered_well(row: dict[str, Any]) -> bool:
    """A whole answer: 200 and complete, or gamma's rate-limit refusal; a planned drop counts."""
    if row["status"] == 429 and row["key"] == RATE_LIMITED:
        return bool(row["retry_after"])
    if row["drop"] and row["status"] == 200 and row["ending"] == "dropped":
        return True
    return row["status"] == 200 and row["done"] and row["ending"] == "clean" and not row["error_event"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = StreamingFake(args.ms_per_token / 1000.0)
    await backend.start()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        triage = TriageProcess(backend.url, Path(workdir))
        triage.config_path.write_text(triage.config_path.read_text() + keys_config())
        await triage.start()
        url = triage.url
        minutes: list[dict[str, Any]] = []
        try:
            async with ClientSession(connector=TCPConnector(limit=0)) as session:
                await asyncio.gather(*(one(session, url, random.Random(i), -i) for i in range(20)))  # warm-up
            await asyncio.sleep(args.settle_s)  # every connection of the warm-up closed
            before = read_proc(triage.pid)
            rows: list[dict[str, Any]] = []
            async with ClientSession(connector=TCPConnector(limit=0)) as session:
                start = time.perf_counter()
                end = start + args.minutes * 60.0
                tasks: list[asyncio.Task[dict[str, Any]]] = []
                next_sample = start + 60.0
                at = start
                n = 0
                while at < end:
                    at += rng.expovariate(args.rate)
                    while next_sample <= min(at, end):
                        await asyncio.sleep(max(0.0, next_sample - time.perf_counter()))
                        minutes.append(await sample(session, url, triage.pid, next_sample - start))
                        next_sample += 60.0
                    if at >= end:
                        break
                    await asyncio.sleep(max(0.0, at - time.perf_counter()))
                    tasks.append(asyncio.ensure_future(one(session, url, random.Random(rng.random()), n)))
                    n += 1
                rows = list(await asyncio.gather(*tasks))
            await asyncio.sleep(args.settle_s)
            async with ClientSession() as session:
                final = await sample(session, url, triage.pid, None)
        finally:
            await triage.stop()
            await backend.stop()
            triage_log = list(triage.output)
    for row in rows:
        row["minute"] = min(int((row["sent_at"] - start) // 60), args.minutes - 1)
    for m in minutes:
        mine = [r for r in rows if r["minute"] == m["minute"] - 1]
        latencies = [r["seconds"] for r in mine if r["status"] == 200 and not r["drop"]]
        m.update(requests=len(mine), p50_s=pct(latencies, 0.5), p99_s=pct(latencies, 0.99),
                 statuses=dict(collections.Counter(str(r["status"]) for r in mine)),
                 bad=sum(1 for r in mine if not answered_well(r)))
    return {"before": {"rss_kib": before.rss_kib, "fds": before.fds, "threads": before.threads},
            "minutes": minutes, "final": final, "requests": len(rows),
            "statuses": dict(collections.Counter(str(r["status"]) for r in rows)),
            "server_errors": sum(1 for r in rows if r["status"] is not None and r["status"] >= 500),
            "unanswered": sum(1 for r in rows if r["status"] is None),
            "bad": [r for r in rows if not answered_well(r)][:50], "bad_count": sum(1 for r in rows if not answered_well(r)),
            "dropped_on_purpose": sum(1 for r in rows if r["drop"]),
            "rate_limited": sum(1 for r in rows if r["status"] == 429),
            "triage_log_tail": triage_log}


async def sample(session: ClientSession, url: str, pid: int, at_s: float | None) -> dict[str, Any]:
    proc = read_proc(pid)
    metrics = await fetch_text(session, url + "/metrics")
    return {"minute": None if at_s is None else round(at_s / 60.0), "rss_kib": proc.rss_kib, "fds": proc.fds,
            "threads": proc.threads, "in_flight": metric_total(metrics, "triage_requests_in_flight"),
            "queued": metric_total(metrics, "triage_queue_length"),
            "client_disconnects": sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                                      if line.startswith("triage_request_errors_total{")
                                      and 'reason="client_disconnect"' in line)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="minutes of traffic")
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second (Poisson arrivals)")
    parser.add_argument("--ms-per-token", type=float, default=1.0, help="the fake backend's speed")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic mix")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="idle seconds before the first and last readings (idle upstream connections go within 2 x 4 s)")
    parser.add_argument("--rss-growth", type=float, default=0.10, help="allowed RSS growth, last minute over the first")
    parser.add_argument("--drift", type=float, default=1.5, help="allowed p50 of the last minute over the first's")
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: growth is measured from the first minute")
    started_utc = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = run_header(started_utc)
    result = asyncio.run(run(args))
    path = save_result("soak", header, result, args)

    r = result
    print(f"{r['requests']} requests in {args.minutes} min at {args.rate:g}/s; statuses {r['statuses']}; "
          f"{r['dropped_on_purpose']} streams dropped by their client on purpose\n")
    print("| minute | requests | p50 s | p99 s | statuses | bad | RSS MiB | open fds | threads | in flight | queued |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    b = r["before"]
    print(f"| before | - | - | - | - | - | {b['rss_kib'] / 1024:.1f} | {b['fds']} | {b['threads']} | - | - |")
    for m in r["minutes"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(m["statuses"].items()))
        print(f"| {m['minute']} | {m['requests']} | {fmt(m['p50_s'], 4)} | {fmt(m['p99_s'], 4)} | {statuses} | {m['bad']} "
              f"| {m['rss_kib'] / 1024:.1f} | {m['fds']} | {m['threads']} | {m['in_flight']:.0f} | {m['queued']:.0f} |")
    f = r["final"]
    print(f"| end + {args.settle_s:g} s | - | - | - | - | - | {f['rss_kib'] / 1024:.1f} | {f['fds']} | {f['threads']} "
          f"| {f['in_flight']:.0f} | {f['queued']:.0f} |")
    first, last = r["minutes"][0], r["minutes"][-1]
    growth = last["rss_kib"] / first["rss_kib"] - 1.0
    drift = last["p50_s"] / first["p50_s"] if last["p50_s"] and first["p50_s"] else None
    print(f"\nRSS growth minute {first['minute']} → {last['minute']}: {growth:+.1%}; p50 last / first: {fmt(drift, 2)}; "
          f"client disconnects counted by Triage: {f['client_disconnects']:.0f}")
    print(f"load average at start {header['loadavg_at_start']}, at end {r['loadavg_at_end']}")
    print(f"wrote {path}")
    checks = {
        "no 5xx": r["server_errors"] == 0,
        "every request answered": r["unanswered"] == 0,
        "every answer a 200 or the rate-limited key's 429": r["bad_count"] == 0,
        f"RSS growth after the first minute under {args.rss_growth:.0%}": growth < args.rss_growth,
        "open fds back to before (+2)": f["fds"] <= b["fds"] + 2,
        "nothing in flight or queued at the end": f["in_flight"] == 0 and f["queued"] == 0,
        f"p50 drift within {args.drift:g}x": drift is not None and drift <= args.drift,
    }
    for name, passed in checks.items():
        print(f"  {'pass' if passed else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
