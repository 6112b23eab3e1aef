#!/usr/bin/env python3
"""Router replicas and vLLM's KV-cache events: do two Triage replicas route as well as one?

    .venv/bin/python bench/fleet/replicas.py --vllm-dtype float32 --rate 0.3    # all five runs (~35 min)
    .venv/bin/python bench/fleet/replicas.py --runs sticky,approx-1 --limit 24   # a smoke run

The fleet and workload of run.py's affinity experiment (two vLLM-CPU servers, one core each,
48 KV blocks of 128 tokens; 12 tenants with ~1,000-token system prompts, 96 requests at 1.2/s,
seed 7). On the 2-core AVX2 machine in float32 a server prefills only ~100-180 tokens/s, so
1.2/s overloads the pair (TTFT ~25 s within 24 requests); `--rate 0.3` sends the same requests
in the same order at 4x the gaps. Both servers publish their KV-cache events
(`--kv-events-config`, ZeroMQ) in every run, so the servers are the same whether the
router reads the events or not. Each run starts from empty prefix caches:

- `events-1`: one Triage replica that subscribes to both servers' events;
- `events-2`: two replicas with that same config, the requests alternating between them;
- `sticky`: the client sends tenant i straight to server i mod 2 (the oracle);
- `approx-1`, `approx-2`: the same without events, each replica on its own prefix index built
  from the requests it routed (what Triage did before KV events).

Triage runs with its shipped defaults: the config names the backends (name, url, kind, and with
events `kv_events` and `tokenizer`) and nothing else. No front end sends a priority: this is
about placement, so vLLM serves every request first come, first served.

Hit rate from both servers' prefix-cache counters, TTFT by the client, max share from the
servers' request counts. Tables on stdout; JSON and a markdown copy under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402
import run as fleet  # noqa: E402
import workload  # noqa: E402

RUNS = {"events-1": (1, True), "events-2": (2, True), "sticky": (0, False), "approx-1": (1, False),
        "approx-2": (2, False)}
# (ratio, summary key, reference run, bound, whether the ratio must be at least the bound); the
# reference "one" is the single replica with the pair's own setting of events.
TARGETS = [("hit rate / one replica's", "hit_rate", "one", 0.95, True),
           ("hit rate / oracle's", "hit_rate", "sticky", 0.9, True),
           ("TTFT mean / oracle's", "ttft_mean", "sticky", 1.25, False)]


def backends(urls: list[str], events: list[tuple[int, int]] | None, tokenizer: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, url in enumerate(urls):
        backend: dict[str, object] = {"name": f"vllm-{i}", "url": url, "kind": "vllm"}
        if events is not None:
            pub, replay = events[i]
            backend["kv_events"] = {"endpoint": f"tcp://127.0.0.1:{pub}",
                                    "replay_endpoint": f"tcp://127.0.0.1:{replay}", "topic": ""}
            backend["tokenizer"] = str(tokenizer)
        out.append(backend)
    return out


def run_one(name: str, urls: list[str], events: list[tuple[int, int]], tokenizer: Path,
            requests: list[workload.Request], logs: Path, started: list[procs.Proc]) -> tuple[dict, list[dict]]:
    replicas, with_events = RUNS[name]
    for url in urls:
        procs.reset_prefix_cache(url)
    # vLLM publishes the reset (AllBlocksCleared) only with its next engine step.
    fleet.poke(urls)
    fronts: list[procs.Proc] = []
    try:
        if replicas == 0:
            def target(r, urls=urls):
                return urls[r.tenant % 2], {}, fleet.chat_body(r, False)
        else:
            config = procs.defaults_config(backends(urls, events if with_events else None, tokenizer))
            for i in range(replicas):
                front = procs.start_triage(f"triage-{name}-{i}", config, procs.free_port(), logs)
                fronts.append(front)
                started.append(front)
            for front in fronts:
                procs.wait_ready(front, "/health", timeout=60)
            time.sleep(1.5)  # the first /metrics readings, and the event subscriptions

            def target(r, urls=tuple(f.url for f in fronts)):
                return urls[r.index % len(urls)], {"x-triage-debug": "1"}, fleet.chat_body(r, False)
        summary, results = fleet.measure(name, requests, target, urls)
        # Evidence that the event path was taken: each replica's KV-event counters and index state.
        summary["triage_kv_metrics"] = [kv_metrics(f.url) for f in fronts]
    finally:
        procs.stop_all(fronts)
    summary["replicas"], summary["kv_events"] = replicas, with_events
    return summary, results


def kv_metrics(url: str) -> dict[str, float]:
    status, text = procs.http_get(url + "/metrics", timeout=10)
    if status != 200:
        raise RuntimeError(f"{url}/metrics answered {status}")
    out = {}
    for line in text.splitlines():
        if line.startswith(("triage_kv_", "triage_prompt_tokenize_seconds_count")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def table(summaries: list[dict]) -> str:
    rows = [("| run | replicas | events | hit rate | TTFT mean | TTFT p50 | TTFT p99 | requests per server | "
             "max share | errors |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        replicas = "oracle" if s["replicas"] == 0 else str(s["replicas"])
        rows.append(
            f"| {s['front_end']} | {replicas} | {'on' if s['kv_events'] else 'off'} | {fleet.fmt(s['hit_rate'])} | "
            f"{fleet.fmt(s['ttft_mean'])} s | {fleet.fmt(s['ttft_p50'])} s | {fleet.fmt(s['ttft_p99'])} s | "
            f"{' / '.join(str(v) for v in s['per_server'].values())} | {s['max_share']:.0%} | "
            f"{s['requests'] - s['ok']} |")
    return "\n".join(rows)


def ratios(summaries: list[dict]) -> list[dict]:
    """The issue's targets for the pair with events; the pair without them for contrast."""
    by = {s["front_end"]: s for s in summaries}
    out = []
    for run in ("events-2", "approx-2"):
        for label, key, reference, bound, at_least in TARGETS:
            reference = run.replace("-2", "-1") if reference == "one" else reference
            if run not in by or reference not in by:
                continue
            value, base = by[run][key], by[reference][key]
            ratio = value / base if value is not None and base else None
            met = ratio is not None and (ratio >= bound if at_least else ratio <= bound)
            out.append({"run": run, "ratio": label, "reference": reference, "value": ratio,
                        "target": f"{'≥' if at_least else '≤'} {bound:g}", "met": met})
    return out


def ratio_table(rows: list[dict]) -> str:
    lines = ["| run | ratio | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['ratio']} | {fleet.fmt(r['value'], 2)} | {r['target']} | "
                     f"{'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, in order, from {', '.join(RUNS)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1.2)
    parser.add_argument("--tenants", type=int, default=12, help="each with 2 conversations of 4 turns")
    parser.add_argument("--limit", type=int, default=None, help="first N requests only (smoke runs)")
    parser.add_argument("--blocks", type=int, default=48)
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--vllm-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="float32 on a CPU without AVX-512 BF16 or AMX (run.py's note)")
    args = parser.parse_args()
    # A SIGTERM (`timeout`, a kill) still runs the finally below, which stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logs = fleet.RESULTS / f"replicas-logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = procs.vllm_model_dir(procs.CACHE / "vllm")
    command = "python bench/fleet/replicas.py " + " ".join(sys.argv[1:])
    report: dict = {"date": stamp, "command": command, "runs": runs, "summaries": []}
    requests = workload.build(seed=args.seed, tenants=args.tenants, rate=args.rate, limit=args.limit)
    events = [(procs.free_port(), procs.free_port()) for _ in range(2)]
    started: list[procs.Proc] = []
    t0 = time.monotonic()
    try:
        servers = fleet.start_servers(args, model_dir, logs, started, [procs.kv_events_args(*e) for e in events])
        report["startup_s"] = time.monotonic() - t0
        urls = [s.url for s in servers]
        raw = {}
        for name in runs:
            summary, raw[name] = run_one(name, urls, events, model_dir, requests, logs, started)
            report["summaries"].append(summary)
        report["requests"] = raw
    finally:
        procs.stop_all(started)
        report["wall_s"] = time.monotonic() - t0
        report["workload"] = {"seed": args.seed, "rate": args.rate, "requests": len(requests),
                              "tenants": args.tenants, "blocks": args.blocks, "vllm_dtype": args.vllm_dtype}
        report["ratios"] = ratios(report["summaries"])
        path = fleet.RESULTS / f"replicas-{stamp}.json"
        path.write_text(json.dumps(report, indent=1, default=str))
    text = "\n".join([(f"`{command}` ({stamp}, {report['wall_s'] / 60:.1f} min, vLLM start "
                       f"{report['startup_s']:.0f} s)"), "", table(report["summaries"]), "",
                      ratio_table(report["ratios"]), ""])
    (fleet.RESULTS / f"replicas-{stamp}.md").write_text(text)
    print("\n" + text)
    print(f"\nJSON: {path}\nlogs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
