"""The relay alone, in-process: Triage's chat relay (or bare_proxy.py's) called directly with an
ASGI scope, against a static nginx, with no server and no load generator in the way. Prints the
CPU and wall time a request takes (minimum and median of 12 batches: this machine's speed
drifts, and the minimum is the steadiest figure), and with --profile the functions by self time.

    .venv/bin/python bench/proxy_overhead/relay_cpu.py                 # Triage, shipped defaults
    .venv/bin/python bench/proxy_overhead/relay_cpu.py --bare          # the floor: the client alone
    .venv/bin/python bench/proxy_overhead/relay_cpu.py --profile       # plus cProfile's top functions
    .venv/bin/python bench/proxy_overhead/relay_cpu.py --instructions [--baseline ../base]

--instructions counts the machine instructions a request takes instead of timing it (valgrind's
callgrind, 200 requests against 1,200, so that start-up and warm-up cancel out): slow (a minute
or two a figure) but the same on a fast machine and a slow one, where CPU times on this shared
machine drift by 2x within an hour. With --baseline, the same count for another checkout
(`git worktree add --detach ../base HEAD~3`), for measuring a change.

The config is run.py's: one backend, `[priority] default = 2`, the rest the shipped defaults
(access log off here, so that its lines do not go to the terminal: --log keeps it on, to stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

import run as bench
from bare_proxy import relay_to
from triage_router.router.config_loader import load_config
from triage_router.router.http.app import create_app
from triage_router.router.http.asgi_io import CLIENT_LINK, ClientLink
from triage_router.router.prediction import length

BODY = json.dumps({"model": "smol", "messages": [{"role": "user", "content": "Say hi in one word."}],
                   "max_tokens": 8}).encode()
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]
BATCHES = 12
# --instructions: requests in each of the two callgrind runs.
INSTRUCTION_RUNS = (200, 1200)


async def one(relay: Any, link: ClientLink) -> None:
    """A request as our server hands it over: the whole body already read, the link in the scope."""
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": HEADERS, "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000),
             "scheme": "http", "http_version": "1.1", "state": {}, CLIENT_LINK: link}
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await relay(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"the relay answered {sent[0]['status']}: {sent[-1].get('body', b'')[:200]!r}")


async def warmed_link(relay: Any) -> ClientLink:
    """The connection's link, as our server makes it, after 300 requests have warmed the relay
    (pools, caches, the length predictor). A --baseline before 7ee2ea9 makes it without a loop."""
    try:
        link = ClientLink(asyncio.get_running_loop())
    except TypeError:
        link = ClientLink()
    link.request_complete = True
    for _ in range(300):
        await one(relay, link)
    return link


async def run_only(relay: Any, requests: int) -> None:
    """What --instructions counts: the warm-up, then `requests` requests, measuring nothing."""
    link = await warmed_link(relay)
    for _ in range(requests):
        await one(relay, link)


def instructions_a_request(bare: bool, code: Path | None) -> int:
    """Instructions a request, from two runs under callgrind (valgrind) that differ only in their
    number of requests; `code` is another checkout to import triage_router from."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(bench.baseline_import_path(code, Path(tempfile.mkdtemp(prefix="triage-relay-cpu-"))))
    totals = []
    for requests in INSTRUCTION_RUNS:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                str(Path(__file__).resolve()), "--run-only", str(requests), *(["--bare"] if bare else [])]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // (INSTRUCTION_RUNS[1] - INSTRUCTION_RUNS[0])


def count_instructions(bare: bool, baseline: Path | None) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind: apt-get install valgrind (setup.sh installs it)")
    name = "bare relay" if bare else "Triage's relay"
    print(f"{name}: {instructions_a_request(bare, None):,} instructions a request")
    if baseline is not None:
        print(f"{name} at {baseline}: {instructions_a_request(bare, baseline):,} instructions a request")


async def measure(relay: Any, requests: int, profile: bool) -> None:
    link = await warmed_link(relay)
    walls, cpus = [], []
    per_batch = max(1, requests // BATCHES)
    for _ in range(BATCHES):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(per_batch):
            await one(relay, link)
        walls.append((time.perf_counter() - wall) / per_batch * 1e6)
        cpus.append((time.process_time() - cpu) / per_batch * 1e6)
    walls.sort()
    cpus.sort()
    print(f"CPU a request: min {cpus[0]:.0f} us, median {cpus[BATCHES // 2]:.0f} us; "
          f"wall: min {walls[0]:.0f} us, median {walls[BATCHES // 2]:.0f} us ({per_batch * BATCHES} requests)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(per_batch * 4):
            await one(relay, link)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3600)
    ap.add_argument("--bare", action="store_true", help="bare_proxy.py's relay instead of Triage's")
    ap.add_argument("--log", action="store_true", help="keep the access log on (to stdout)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--instructions", action="store_true", help="count instructions a request (valgrind)")
    ap.add_argument("--baseline", type=Path, help="with --instructions: count another checkout's too")
    ap.add_argument("--run-only", type=int, metavar="N", help=argparse.SUPPRESS)  # what --instructions runs
    args = ap.parse_args()
    if args.instructions:
        count_instructions(args.bare, args.baseline)
        return 0
    work = Path(tempfile.mkdtemp(prefix="triage-relay-cpu-"))
    (work / "nginx-tmp").mkdir()
    json_port, sse_port = bench.free_port(), bench.free_port()
    (work / "nginx.conf").write_text(bench.nginx_conf(work, json_port, sse_port))
    nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
    try:
        upstream = f"http://127.0.0.1:{json_port}"
        bench.wait_ready(None, f"{upstream}/v1/chat/completions", "json")
        if args.bare:
            relay = relay_to(upstream)
        else:
            config = work / "triage.toml"
            config.write_text(f'[[backends]]\nname = "nginx"\nurl = "{upstream}"\nkind = "openai"\nmodels = ["smol"]\n\n'
                              '[priority]\ndefault = 2\n' + ("" if args.log else "\n[log]\naccess = false\n"))
            relay = create_app(load_config(config)).relays["/v1/chat/completions"]
        if args.run_only is not None:
            # A cached length prediction is recomputed after 8 answers once 0.1 s has passed: under
            # valgrind's 50x slowdown that is every 8 requests, where a served router at 1,000-2,000
            # requests a second does it every 100-200. Never recomputed is nearer to that.
            length.REFRESH_AFTER_S = float("inf")
            uvloop.run(run_only(relay, args.run_only))
        else:
            uvloop.run(measure(relay, args.requests, args.profile))
    finally:
        nginx.terminate()
        nginx.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
