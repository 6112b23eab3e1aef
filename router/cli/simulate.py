"""`triage simulate`: run several policies on the same simulated workload and compare them.

The router's CLI adds this as a subcommand: `configure_parser(sub)` then `run(args)`.
`python -m triage_router.policies.sim` runs it standalone. Settings and maxcon accept comma lists: the
command then sweeps every (setting, maxcon) cell, showing progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from triage_router.policies.catalog import DEFAULT_AGING_BOUND, DEFAULT_POLICY, policy_names
from triage_router.policies.sim.hardware import SETTINGS
from triage_router.policies.sim.metrics import Completion, Summary
from triage_router.policies.sim.report import format_table, paper_checks, ratios
from triage_router.policies.sim.simulator import PLACERS, SimConfig, simulate
from triage_router.policies.sim.workload import (
    PredictorSpec, RealisticSpec, SimRequest, paper_workload, realistic_workload,
)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Compare scheduling policies in a deterministic discrete-event simulation."
    add = parser.add_argument
    add("--mode", choices=("paper", "realistic"), default="paper",
        help="paper: the paper's exact setup; realistic: Poisson/bursty, mixed batches, prefixes")
    add("--setting", default="A100_4B", help=f"comma list of {', '.join(SETTINGS)}")
    add("--compare", default="fcfs,sjf,pjf,semantic,default",
        help=f"comma list of policies: {', '.join(policy_names())}")
    add("--seed", type=int, default=0)
    add("--batch", type=int, default=16, help="batch limit per replica")
    add("--block-tokens", type=int, default=32, help="KV block size")
    add("--aging-bound", type=float, default=DEFAULT_AGING_BOUND,
        help="seconds in the system before a request is promoted (for +aging policies)")
    add("--no-preempt", action="store_true", help="never displace a running request")
    add("--wsjf-weights", default=None,
        help="comma list of per-priority weights for wsjf, kv-wsjf and default, e.g. 16,3,1,1,1")
    paper = parser.add_argument_group("paper mode")
    paper.add_argument("--gap", type=float, default=0.01, help="seconds between arrival instants")
    paper.add_argument("--maxcon", default="20", help="max requests per instant (comma list)")
    paper.add_argument("--gap-num", type=int, default=20, help="number of arrival instants")
    errors = parser.add_argument_group("prediction errors")
    errors.add_argument("--priority-error-rate", type=float, default=0.0)
    errors.add_argument("--priority-error-distance", type=int, default=0, help="in levels")
    errors.add_argument("--length-error-rate", type=float, default=0.0)
    errors.add_argument("--length-error-distance", type=int, default=0, help="in 50-token buckets")
    real = parser.add_argument_group("realistic mode")
    real.add_argument("--requests", type=int, default=400)
    real.add_argument("--rate", type=float, default=20.0, help="mean arrivals per second")
    real.add_argument("--bursty", action="store_true", help="on/off bursts instead of Poisson")
    real.add_argument("--tenants", type=int, default=4, help="tenants, each with its system prompt")
    real.add_argument("--system-prompt", type=int, default=1024, help="shared prefix tokens")
    real.add_argument("--replicas", type=int, default=1)
    real.add_argument("--placement", choices=sorted(PLACERS), default="least-load")
    real.add_argument("--prefix-cache", type=int, default=2, help="prefixes cached per replica")
    real.add_argument("--batch-overhead", type=float, default=0.02, help="decode cost per extra member (x dc2)")
    real.add_argument("--prefill-chunk", type=int, default=512, help="prefill tokens per iteration")
    real.add_argument("--rebalance-every", type=float, default=None, help="seconds between rebalancing")
    real.add_argument("--critical-replicas", type=int, default=0,
                      help="the first N replicas serve priority 0 only (see --placement qos-aware)")
    real.add_argument("--critical-cap", type=int, default=4, help="their concurrency cap under qos-aware")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON instead of tables")
    out.add_argument("--plot", metavar="PNG", help="write per-priority bars and latency CDFs")


def _config(args: argparse.Namespace, setting: str) -> SimConfig:
    realistic = args.mode == "realistic"
    return SimConfig(
        setting=SETTINGS[setting],
        replicas=args.replicas if realistic else 1,
        batch_limit=args.batch,
        block_tokens=args.block_tokens,
        mixed=realistic,
        batch_overhead=args.batch_overhead if realistic else 0.0,
        prefill_chunk=args.prefill_chunk if realistic else None,
        prefix_cache_entries=args.prefix_cache if realistic else 0,
        preemptive=not args.no_preempt,
        placement=args.placement,
        aging_bound=args.aging_bound,
        rebalance_every=args.rebalance_every if realistic else None,
        wsjf_weights=tuple(float(w) for w in _csv(args.wsjf_weights)) if args.wsjf_weights else None,
        critical_replicas=args.critical_replicas if realistic else 0,
        critical_cap=args.critical_cap,
    )


def _workload(args: argparse.Namespace, maxcon: int) -> list[SimRequest]:
    predictor = PredictorSpec(
        priority_error_rate=args.priority_error_rate,
        priority_error_distance=args.priority_error_distance,
        length_error_rate=args.length_error_rate,
        length_error_distance=args.length_error_distance,
    )
    if args.mode == "paper":
        return paper_workload(args.seed, args.gap, maxcon, gap_num=args.gap_num, predictor=predictor)
    spec = RealisticSpec(requests=args.requests, rate=args.rate, bursty=args.bursty,
                         tenants=args.tenants, system_prompt_tokens=args.system_prompt)
    return realistic_workload(args.seed, spec, predictor)


def _label(name: str) -> str:
    return f"default ({DEFAULT_POLICY})" if name == "default" else name


def run(args: argparse.Namespace) -> int:
    settings = _csv(args.setting)
    policies = _csv(args.compare)
    known = set(policy_names())
    bad = [s for s in settings if s not in SETTINGS] + [p for p in policies if p not in known]
    if bad or not policies:
        print(f"unknown setting or policy: {', '.join(bad) or '(none given)'}", file=sys.stderr)
        return 2
    try:
        maxcons = [int(m) for m in _csv(args.maxcon)] if args.mode == "paper" else [0]
        weights = [float(w) for w in _csv(args.wsjf_weights or "1")]
    except ValueError:
        print(f"--maxcon takes integers, --wsjf-weights numbers: {args.maxcon!r}, {args.wsjf_weights!r}",
              file=sys.stderr)
        return 2
    if min(weights) <= 0:
        print("--wsjf-weights must be positive", file=sys.stderr)
        return 2
    cells: list[dict[str, Any]] = []
    total = len(settings) * len(maxcons) * len(policies)
    done = 0
    last: tuple[dict[str, Summary], dict[str, list[Completion]], str] | None = None
    for setting in settings:
        config = _config(args, setting)
        for maxcon in maxcons:
            workload = _workload(args, maxcon)
            summaries: dict[str, Summary] = {}
            completions: dict[str, list[Completion]] = {}
            for name in policies:
                done += 1
                if total > 1:
                    print(f"[{done}/{total}] {setting} maxcon={maxcon} {name}", file=sys.stderr, flush=True)
                result = simulate(workload, name, config)
                summaries[_label(name)] = result.summary
                completions[_label(name)] = result.completions
            title = (f"{setting}, gap {args.gap}, maxcon {maxcon}, batch {args.batch}, seed {args.seed}"
                     if args.mode == "paper" else
                     f"{setting}, realistic, {args.requests} requests at {args.rate}/s, "
                     f"{config.replicas} replica(s), {config.placement}, seed {args.seed}")
            ours = _label("default")
            cells.append({
                "setting": setting, "maxcon": maxcon if args.mode == "paper" else None,
                "requests": len(workload), "title": title,
                "policies": {k: v.to_json() for k, v in summaries.items()},
                "checks": paper_checks(summaries, ours), "ratios": ratios(summaries, ours),
            })
            last = (summaries, completions, title)
            if not args.json:
                print(f"\n## {title} ({len(workload)} requests; latency in seconds)\n")
                print(format_table(summaries))
                for k, v in cells[-1]["ratios"].items():
                    print(f"  {k}: {v:.2f}")
                for k, ok in cells[-1]["checks"].items():
                    print(f"  [{'x' if ok else ' '}] {k}")
    if args.json:
        doc: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if _jsonable(v)}}
        if len(cells) == 1:
            doc.update(cells[0])
        else:
            doc["cells"] = cells
        print(json.dumps(doc, indent=2))
    if args.plot and last is not None:
        try:
            from triage_router.router.cli.simulate_plot import plot
        except ImportError:  # pragma: no cover - matplotlib is optional
            print("--plot needs matplotlib", file=sys.stderr)
            return 2
        plot(last[0], last[1], args.plot, last[2])
        print(f"wrote {args.plot}" + (" (last cell)" if len(cells) > 1 else ""), file=sys.stderr)
    return 0


def _jsonable(v: object) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage simulate")
    configure_parser(parser)
    return run(parser.parse_args(argv))


