"""Tables, JSON and the paper's checks for a set of simulated policies."""

from __future__ import annotations

from triage_router.policies.sim.metrics import PRIORITIES, Summary


def format_table(summaries: dict[str, Summary]) -> str:
    head = (["policy"] + [f"P{p} mean (p99)" for p in PRIORITIES]
            + ["mean", "p50", "p99", "TTFT", "queue", "tok/s", "batch", "preempt", "prefix hits"])
    rows = []
    for name, s in summaries.items():
        rows.append(
            [name]
            + [f"{s.per_priority[p].mean:.2f} ({s.per_priority[p].p99:.2f})" for p in PRIORITIES]
            + [f"{s.latency.mean:.2f}", f"{s.latency.p50:.2f}", f"{s.latency.p99:.2f}",
               f"{s.ttft.mean:.2f}", f"{s.queueing.mean:.2f}", f"{s.throughput_tokens_per_s:.0f}",
               f"{s.mean_batch_size:.1f}", str(s.preemptions), str(s.prefix_hits)]
        )
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paper_checks(summaries: dict[str, Summary], ours: str) -> dict[str, bool]:
    """The paper's qualitative results and the targets for our own policy, where the
    policies they mention were run."""
    s = summaries
    checks: dict[str, bool] = {}
    if {"semantic", "pjf"} <= s.keys():
        checks["semantic P0 <= PJF P0"] = s["semantic"].per_priority[0].mean <= s["pjf"].per_priority[0].mean
    if "sjf" in s:
        checks["SJF has the lowest mean"] = all(
            s["sjf"].latency.mean <= v.latency.mean for k, v in s.items() if k in ("fcfs", "pjf", "semantic"))
    if "fcfs" in s:
        checks["FCFS is the worst mean"] = all(
            s["fcfs"].latency.mean >= v.latency.mean for k, v in s.items() if k in ("sjf", "semantic"))
    if ours in s and {"semantic", "sjf"} <= s.keys():
        o = s[ours]
        checks[f"{ours}: P0 within 10% of semantic"] = o.per_priority[0].mean <= 1.1 * s["semantic"].per_priority[0].mean
        checks[f"{ours}: P1 within 10% of semantic"] = o.per_priority[1].mean <= 1.1 * s["semantic"].per_priority[1].mean
        checks[f"{ours}: mean within 10% of SJF"] = o.latency.mean <= 1.1 * s["sjf"].latency.mean
    if ours in s:
        o = s[ours]
        checks[f"{ours}: P4 <= 2x mean"] = o.per_priority[4].mean <= 2 * o.latency.mean
    return checks


def ratios(summaries: dict[str, Summary], ours: str) -> dict[str, float]:
    s = summaries
    out: dict[str, float] = {}
    if "semantic" in s and s["semantic"].per_priority[0].mean > 0:
        sem = s["semantic"]
        out["semantic P4/P0"] = sem.per_priority[4].mean / sem.per_priority[0].mean
        if ours in s:
            out[f"{ours} P0 / semantic P0"] = s[ours].per_priority[0].mean / sem.per_priority[0].mean
            out[f"{ours} P1 / semantic P1"] = s[ours].per_priority[1].mean / sem.per_priority[1].mean
    if "sjf" in s and ours in s and s["sjf"].latency.mean > 0:
        out[f"{ours} mean / SJF mean"] = s[ours].latency.mean / s["sjf"].latency.mean
    if ours in s and s[ours].latency.mean > 0:
        out[f"{ours} P4 / mean"] = s[ours].per_priority[4].mean / s[ours].latency.mean
    return out
