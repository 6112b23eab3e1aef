"""What reading a vLLM-CPU server's /metrics every 100 ms (Triage's default) costs that server.

Starts one server as bench/fleet does, then alternates idle phases and phases in which /metrics
is read at `--hz`, and prints the CPU time its processes (the API server and its children, the
engine core among them) used per phase, as a share of one core.

    .venv/bin/python bench/fleet/scrape_cost.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()


def process_tree(root: int) -> set[int]:
    tree, grew = {root}, True
    while grew:
        grew = False
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in tree:
                try:
                    if int(_stat(int(entry))[1]) in tree:
                        tree.add(int(entry))
                        grew = True
                except OSError:
                    pass
    return tree


def cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = _stat(pid)
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
        except OSError:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logs = procs.ROOT / "bench" / "results" / "scrape-cost-logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = procs.start_vllm("vllm-scrape", procs.vllm_model_dir(procs.CACHE / "vllm"), procs.free_port(), "0", logs)
    try:
        procs.wait_ready(server, "/health", timeout=300)
        time.sleep(3)  # let start-up work settle
        pids = process_tree(server.process.pid)
        for _ in range(args.rounds):
            for hz in (0.0, args.hz):
                before, start, reads = cpu_seconds(pids), time.monotonic(), 0
                while time.monotonic() - start < args.phase_s:
                    if hz:
                        urllib.request.urlopen(server.url + "/metrics").read()
                        reads += 1
                    time.sleep(1 / hz if hz else 0.1)
                elapsed = time.monotonic() - start
                share = (cpu_seconds(pids) - before) / elapsed
                label = f"/metrics at {hz:g} Hz" if hz else "idle"
                print(f"{label}: {share:.1%} of a core over {elapsed:.1f} s ({reads} reads)", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
