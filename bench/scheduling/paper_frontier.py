"""Sweep a policy's per-priority weights over the paper's nine cells and count the cells that meet
all four paper-mode targets:

- P0 mean <= 1.1x the paper's semantic P0 mean;
- P1 mean <= 1.1x semantic's P1 mean (the rules send incidents in progress to P1);
- overall mean <= 1.1x SJF's mean;
- P4 mean <= 2x the policy's own mean.

    .venv/bin/python bench/scheduling/paper_frontier.py --policy kv-wsjf+aging \
        --weights 16,1,1,1,1 16,2,1,1,1 --seeds 0,1,2,3,4 [--json OUT]

SJF and semantic are simulated once per cell and seed; every weight vector is then one more
simulation per cell. Simulated seconds only, so the figures are the same on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from triage_router.policies.sim.hardware import SETTINGS
from triage_router.policies.sim.simulator import SimConfig, simulate
from triage_router.policies.sim.workload import paper_workload

CELLS = [(s, m) for s in ("A100_4B", "A100_7B", "A5000_4B") for m in (5, 20, 50)]


@dataclass(frozen=True)
class CellResult:
    setting: str
    maxcon: int
    seed: int
    p0: float  # ratios; see the module docstring
    p1: float
    mean: float
    p4: float
    p1_sjf: float  # P1 mean ÷ SJF's P1 mean: does an incident wait longer than priority-blind?

    def meets(self) -> bool:
        return self.p0 <= 1.1 and self.p1 <= 1.1 and self.mean <= 1.1 and self.p4 <= 2.0


def _weights(text: str) -> tuple[float, ...]:
    return tuple(float(w) for w in text.split(","))


def sweep(policy: str, weight_sets: list[tuple[float, ...]], seeds: list[int]) -> dict[str, list[CellResult]]:
    out: dict[str, list[CellResult]] = {",".join(f"{w:g}" for w in ws): [] for ws in weight_sets}
    for seed in seeds:
        for setting, maxcon in CELLS:
            base = SimConfig(setting=SETTINGS[setting])
            workload = paper_workload(seed, 0.01, maxcon)
            sjf = simulate(workload, "sjf", base).summary
            sem = simulate(workload, "semantic", base).summary
            for ws in weight_sets:
                config = SimConfig(setting=SETTINGS[setting], wsjf_weights=ws)
                ours = simulate(workload, policy, config).summary
                pp = ours.per_priority
                out[",".join(f"{w:g}" for w in ws)].append(CellResult(
                    setting, maxcon, seed,
                    p0=pp[0].mean / sem.per_priority[0].mean,
                    p1=pp[1].mean / sem.per_priority[1].mean,
                    mean=ours.latency.mean / sjf.latency.mean,
                    p4=pp[4].mean / ours.latency.mean,
                    p1_sjf=pp[1].mean / sjf.per_priority[1].mean,
                ))
            print(f"seed {seed} {setting}/{maxcon} done", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="kv-wsjf+aging")
    parser.add_argument("--weights", nargs="+", required=True, help="weight vectors, e.g. 16,2,1,1,1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--json", help="write every cell's ratios here")
    args = parser.parse_args()
    results = sweep(args.policy, [_weights(w) for w in args.weights], [int(s) for s in args.seeds.split(",")])
    print("| weights | cells meeting all four | P0 ÷ semantic, worst | P1 ÷ semantic, median / worst "
          "| mean ÷ SJF, median / worst | P4 ÷ mean, worst | P1 ÷ SJF's P1, worst |")
    print("|---|---|---|---|---|---|---|")
    for ws, cells in results.items():
        p1 = sorted(c.p1 for c in cells)
        mean = sorted(c.mean for c in cells)
        print(f"| {ws} | {sum(c.meets() for c in cells)} / {len(cells)} | {max(c.p0 for c in cells):.3f} "
              f"| {p1[len(p1) // 2]:.3f} / {p1[-1]:.3f} | {mean[len(mean) // 2]:.3f} / {mean[-1]:.3f} "
              f"| {max(c.p4 for c in cells):.2f} | {max(c.p1_sjf for c in cells):.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({ws: [c.__dict__ for c in cells] for ws, cells in results.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
