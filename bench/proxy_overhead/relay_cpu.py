"""The relay alone, in-process: Triage's chat relay (or bare_proxy.py's) called directly with an
ASGI scope, against a static nginx, with no server and no load generator in the way. Prints the
CPU and wall time a request takes (minimum and median of 12 batches: this machine's speed
drifts, and the minimum is the steadiest figure), and with --profile the functions by self time.

    .venv/bin/python bench/proxy_overhead/relay_cpu.py                 # Triage, shipped defaults
    .venv/bin/python bench/proxy_overhead/relay_cpu.py --bare          # the floor: the client alone
    .venv/bin/python bench/proxy_overhead/relay_cpu.py --profile       # plus cProfile's top functions

The config is run.py's: one backend, `[priority] default = 2`, the rest the shipped defaults
(access log off here, so that its lines do not go to the terminal: --log keeps it on, to stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
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

BODY = json.dumps({"model": "smol", "messages": [{"role": "user", "content": "Say hi in one word."}],
                   "max_tokens": 8}).encode()
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]
BATCHES = 12


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


async def measure(relay: Any, requests: int, profile: bool) -> None:
    link = ClientLink()
    link.request_complete = True
    for _ in range(300):  # warm: pools, caches, the length predictor
        await one(relay, link)
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
    args = ap.parse_args()
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
        uvloop.run(measure(relay, args.requests, args.profile))
    finally:
        nginx.terminate()
        nginx.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
