"""Figures for a README: per-priority mean latency bars and latency CDFs (needs matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

from triage_router.policies.sim.metrics import PRIORITIES, Completion, Summary


def plot(summaries: dict[str, Summary], completions: dict[str, Sequence[Completion]], path: str,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(summaries)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [p + (i - (len(names) - 1) / 2) * width for p in PRIORITIES]
        bars.bar(xs, [summaries[name].per_priority[p].mean for p in PRIORITIES], width, label=name)
    bars.set_xticks(list(PRIORITIES), [f"P{p}" for p in PRIORITIES])
    bars.set_ylabel("mean latency, arrival to completion (s)")
    bars.set_title("per priority (0 = most urgent)")
    bars.legend(fontsize=8)
    for name in names:
        lat = sorted(c.latency for c in completions[name])
        n = len(lat)
        cdf.step(lat, [(k + 1) / n for k in range(n)], where="post", label=name)
    cdf.set_xlabel("latency (s)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("latency CDF, all priorities")
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
