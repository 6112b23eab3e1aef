#!/usr/bin/env python3
"""Proxy overhead, side by side: the same wrk load against a static nginx upstream directly,
through Triage (one worker), through LiteLLM's proxy and through sglang-router.

    python3 bench/proxy_overhead/run.py              # all four targets, 3 x 4 s per cell
    python3 bench/proxy_overhead/run.py --profile    # plus a py-spy summary of Triage
    python3 bench/proxy_overhead/run.py --targets direct,sglang --rounds 1 --duration 2
    # Triage with its access log on (the default) and off, and Triage from another checkout:
    python3 bench/proxy_overhead/run.py --targets direct,triage,triage-nolog,baseline --baseline ../base

Stdlib only, so any python3 runs it. It calls setup.sh first (installs nginx, wrk and the
peers' venvs when missing), prints one table per target and Triage's ratios, and writes the
results as JSON under bench/results/.

The upstream. nginx cannot branch on a POST body without extra modules, so it listens on two
ports: one answers POST /v1/chat/completions with a fixed chat completion, the other with a
fixed SSE stream. Each proxy is started once per mode with its single backend on the matching
port, so the client body is identical for every target (model "smol") apart from "stream".
Both ports also answer GET /v1/models and GET /health.

Triage's variants, for measuring a change: `triage` runs with its defaults (the access log on,
to stdout, which goes to the target's log file like everything the proxies print),
`triage-nolog` with `[log] access = false`, and `baseline` runs the code of another checkout
given by --baseline (say `git worktree add --detach ../base HEAD~3`) with the same venv and
config, so that a change and what it started from are measured in the same interleaved run.
`bare` (bare_proxy.py) is the floor: the same server stack and upstream client relaying with
none of Triage's routing, so that the stack's cost and Triage's own are told apart.

Each cell (mode x concurrency) runs in rounds that visit every target in turn, wrk with one
thread, after a warm-up. The machine has 2 cores shared with other people's test runs, so
besides req/s and latency it reports the proxy's CPU time per request, which is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENVS = ROOT / "bench" / ".venvs"
RESULTS = ROOT / "bench" / "results"
TRIAGE = ROOT / ".venv" / "bin" / "triage"

MODES = ("json", "sse")
CONCURRENCIES = (1, 32)
ALL_TARGETS = ("direct", "bare", "triage", "triage-nolog", "baseline", "litellm", "sglang")
DEFAULT_TARGETS = ("direct", "triage", "litellm", "sglang")
TRIAGE_TARGETS = ("triage", "triage-nolog", "baseline")
READY_TIMEOUT_S = 120.0  # LiteLLM imports for a long while on 2 busy cores

CONTENT = ["Hi", "!", " How", " can", " I", " help", "?"]
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "smol",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(CONTENT)},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": len(CONTENT), "total_tokens": 19},
}


def sse_body() -> str:
    """One chunk per token, a final chunk with finish_reason and usage, then [DONE]."""

    def chunk(delta: dict, finish: str | None, usage: dict | None = None) -> str:
        obj: dict = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "smol",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            obj["usage"] = usage
        return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": piece}, None) for piece in CONTENT]
    events.append(chunk({}, "stop", COMPLETION["usage"]))
    return "".join(events) + "data: [DONE]\n\n"


def baseline_import_path(baseline: Path, workdir: Path) -> Path:
    """A directory that, put on PYTHONPATH, makes `triage_router` import from the checkout
    `baseline`, ahead of the installed one."""
    path = workdir / "baseline-path"
    path.mkdir(exist_ok=True)
    if not (path / "triage_router").exists():
        (path / "triage_router").symlink_to(baseline.resolve())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(workdir: Path, json_port: int, sse_port: int) -> str:
    models = json.dumps({"object": "list", "data": [{"id": "smol", "object": "model",
                                                       "created": 0, "owned_by": "bench"}]})

    def server(port: int, body: str, ctype: str) -> str:
        # nginx single-quoted strings take any text but a single quote; our bodies have none.
        assert "'" not in body
        return f"""
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{ default_type {ctype}; return 200 '{body}'; }}
        location = /v1/models {{ default_type application/json; return 200 '{models}'; }}
        location = /health {{ default_type application/json; return 200 '{{}}'; }}
    }}"""

    completion = json.dumps(COMPLETION, separators=(",", ":"))
    tmp = workdir / "nginx-tmp"
    return f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    # nginx closes a keep-alive connection after 1000 requests by default; proxies' pools
    # would then pay reconnects that the direct target does not.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    {server(json_port, completion, "application/json")}
    {server(sse_port, sse_body(), "text/event-stream")}
}}
"""


@dataclass
class Proc:
    """A child started in its own process group, so stopping it takes its children too."""

    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass

    def cpu_seconds(self) -> float:
        """User+system CPU of every live process in the group: what the proxy burns."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == self.popen.pid:  # fields[2] is pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    popen = subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, start_new_session=True, cwd=workdir,
    )
    return Proc(name, popen, log)


def post(url: str, stream: bool, timeout: float = 10.0) -> tuple[int, bytes]:
    body = json.dumps({"model": "smol", "messages": [{"role": "user", "content": "Say hi."}],
                       "max_tokens": 8, **({"stream": True} if stream else {})}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def check_answer(mode: str, body: bytes) -> str | None:
    """None if the proxy relayed what the upstream sent (as a client would read it)."""
    text = body.decode(errors="replace")
    if mode == "json":
        try:
            got = json.loads(text)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"not a chat completion: {text[:200]!r}"
        return None if got == "".join(CONTENT) else f"wrong content {got!r}"
    pieces = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                pieces.append(choice.get("delta", {}).get("content") or "")
    if not text.rstrip().endswith("data: [DONE]"):
        return f"stream does not end in [DONE]: {text[-200:]!r}"
    return None if "".join(pieces) == "".join(CONTENT) else f"wrong stream content {pieces!r}"


def wait_ready(proc: Proc | None, url: str, mode: str) -> None:
    """Polls with a real request until the proxy answers correctly; bounded in time."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
        try:
            status, body = post(url, stream=mode == "sse", timeout=5)
            problem = check_answer(mode, body) if status == 200 else f"HTTP {status}"
            if problem is None:
                return
            last = problem
        except Exception as exc:  # not listening yet, or still starting up
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {last}")


def start_target(target: str, mode: str, upstream: str, workdir: Path,
                 baseline: Path | None = None) -> tuple[Proc | None, str]:
    """Starts the proxy for one mode in front of `upstream` and returns (process, base URL).
    Logs and configs are named TARGET-MODE in the work directory, kept after the run."""
    name = f"{target}-{mode}"
    if target == "direct":
        return None, upstream
    port = free_port()
    if target in TRIAGE_TARGETS:
        cfg = workdir / f"{name}.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[[backends]]\nname = "nginx"\nurl = "{upstream}"\nkind = "openai"\n'
            f'models = ["smol"]\n\n[priority]\ndefault = 2\n'
            + ('\n[log]\naccess = false\n' if target == "triage-nolog" else "")
        )
        env = None
        if target == "baseline":
            assert baseline is not None
            env = {"PYTHONPATH": str(baseline_import_path(baseline, workdir))}
        # `triage serve` runs one worker process by design; nothing to pin.
        proc = start(name, [str(TRIAGE), "serve", "--config", str(cfg), "--port", str(port)],
                     workdir, env)
    elif target == "bare":
        proc = start(name, [str(ROOT / ".venv" / "bin" / "python"), str(HERE / "bare_proxy.py"), upstream, str(port)],
                     workdir)
    elif target == "litellm":
        # YAML is a superset of JSON, so no YAML library is needed to write the config.
        cfg = workdir / f"{name}.yaml"
        cfg.write_text(json.dumps({
            "model_list": [{"model_name": "smol", "litellm_params": {
                "model": "openai/smol", "api_base": f"{upstream}/v1", "api_key": "sk-bench"}}],
        }))
        proc = start(name, [str(VENVS / "litellm" / "bin" / "litellm"), "--config", str(cfg),
                              "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                     workdir, env={
                         "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                         # Otherwise it fetches its price map from the internet at import.
                         "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                         "LITELLM_LOG": "ERROR",
                     })
    elif target == "sglang":
        # One process (a Rust server inside the Python launcher); it has no worker-count
        # option, so its tokio runtime uses its default thread count on this machine.
        proc = start(name, [str(VENVS / "sglang" / "bin" / "sglang-router"), "launch",
                              "--host", "127.0.0.1", "--port", str(port),
                              "--worker-urls", upstream, "--policy", "cache_aware",
                              "--backend", "openai", "--prometheus-port", str(free_port()),
                              "--log-level", "warn"], workdir)
    else:
        raise ValueError(target)
    return proc, f"http://127.0.0.1:{port}"


def wrk(url: str, mode: str, conc: int, seconds: int) -> dict:
    argv = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(HERE / "wrk_post.lua"), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         env={**os.environ, "STREAM": "1" if mode == "sse" else "0"})
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            res = json.loads(line[len("WRK_JSON "):])
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            return res
    raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    results: dict = field(default_factory=dict)  # target -> "mode c=N" -> wrk result
    failures: dict = field(default_factory=dict)  # "target mode" -> why it was not measured
    profiles: dict = field(default_factory=dict)  # mode -> py-spy summary of Triage

    def measure_mode(self, mode: str, targets: list[str], upstream: str) -> None:
        """Starts every target for this mode, then measures each cell in rounds that visit
        the targets in turn: other people's test runs on this 2-core machine come and go,
        and interleaving spreads that noise over all targets instead of one."""
        procs: dict[str, Proc | None] = {}
        urls: dict[str, str] = {}
        try:
            for target in targets:
                try:
                    procs[target], base = start_target(target, mode, upstream, self.workdir,
                                                       self.args.baseline)
                    urls[target] = f"{base}/v1/chat/completions"
                except Exception as exc:
                    self.failures[f"{target} {mode}"] = str(exc)
            for target in list(urls):
                try:
                    wait_ready(procs[target], urls[target], mode)
                except Exception as exc:
                    self.failures[f"{target} {mode}"] = str(exc)
                    print(f"  {target} ({mode}): not ready: {exc}", flush=True)
                    del urls[target]
            for conc in self.args.concurrency:
                cell = f"{mode} c={conc}"
                rounds: dict[str, list[dict]] = {t: [] for t in urls}
                for _ in range(self.args.rounds):
                    for target, url in list(urls.items()):
                        try:
                            rounds[target].append(self.one_round(procs[target], url, mode, conc))
                        except Exception as exc:
                            self.failures[f"{target} {mode}"] = f"c={conc}: {exc}"
                            print(f"  {target} ({cell}): FAILED: {exc}", flush=True)
                            del urls[target], rounds[target]
                for target, rs in rounds.items():
                    res = combine(rs)
                    self.results.setdefault(target, {})[cell] = res
                    cpu = res["cpu_us_per_req"]
                    print(f"  {target:8} {cell:9} {res['rps']:9.0f} req/s  "
                          f"p50 {res['p50_us'] / 1000:7.3f} ms  p99 {res['p99_us'] / 1000:7.3f} ms"
                          f"  cpu/req {'-' if cpu is None else f'{cpu:.0f} us':>7}"
                          f"  errors {res['errors']}", flush=True)
                    if self.args.profile and target == "triage" and conc == 32:
                        self.profile(procs[target], urls[target], mode)
        finally:
            for proc in procs.values():
                if proc:
                    proc.stop()

    def one_round(self, proc: Proc | None, url: str, mode: str, conc: int) -> dict:
        wrk(url, mode, conc, self.args.warmup)  # fills the proxy's pools after the others ran
        cpu0 = proc.cpu_seconds() if proc else 0.0
        load0 = os.getloadavg()[0]
        res = wrk(url, mode, conc, self.args.duration)
        res["proxy_cpu_s"] = round(proc.cpu_seconds() - cpu0, 3) if proc else None
        res["loadavg1_before"] = load0
        # A proxy that answered errors fast would look great; check that it still works.
        wait_ready(proc, url, mode)
        return res


    def profile(self, proc: Proc, url: str, mode: str) -> None:
        """Samples Triage with py-spy under one more c=32 load, apart from the measured cell
        (sampling takes CPU from a 2-core machine), and prints where its CPU time goes."""
        raw = self.workdir / f"triage-{mode}.pyspy.txt"
        spy = subprocess.Popen([str(VENVS / "pyspy" / "bin" / "py-spy"), "record", "--nonblocking",
                                "-r", "250", "-d", str(max(self.args.duration, 5)), "-f", "raw",
                                "-o", str(raw), "-p", str(proc.popen.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wrk(url, mode, 32, max(self.args.duration, 5))
        spy.wait(timeout=60)
        self.profiles[mode] = summarize_pyspy(raw)
        print(f"  py-spy, triage {mode} c=32, top self time ({raw}):")
        print("    by package: " + ", ".join(
            f"{pkg} {share:.0%}" for pkg, share in self.profiles[mode]["self_by_package"][:8]))
        for frame, share in self.profiles[mode]["self"][:12]:
            print(f"    {share:5.1%}  {frame}")



def combine(rounds: list[dict]) -> dict:
    """Throughput over all rounds; latency percentiles as the median of the rounds' (wrk's
    histograms cannot be merged from its summary)."""
    def median(key: str) -> float:
        vals = sorted(r[key] for r in rounds)
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2

    requests = sum(r["requests"] for r in rounds)
    cpu = [r["proxy_cpu_s"] for r in rounds if r["proxy_cpu_s"] is not None]
    return {
        "rps": requests / (sum(r["duration_us"] for r in rounds) / 1e6),
        "p50_us": median("p50_us"),
        "p99_us": median("p99_us"),
        "requests": requests,
        "errors": sum(sum(r["errors"].values()) for r in rounds),
        # CPU the proxy burns per request hardly depends on what else runs on the machine,
        # unlike req/s: the steadier figure when cores are shared.
        "cpu_us_per_req": round(sum(cpu) / requests * 1e6, 1) if cpu and requests else None,
        "rounds": rounds,
    }

def summarize_pyspy(raw: Path, top: int = 25) -> dict:
    """Collapsed stacks ("f1;f2;f3 COUNT") -> shares of samples, by leaf and by any frame."""
    leaf: dict[str, int] = {}
    incl: dict[str, int] = {}
    package: dict[str, int] = {}  # leaf frame's top-level package: uvicorn, aiohttp, router, ...
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
        path = frames[-1].rpartition(" (")[2]
        pkg = path.split("/")[0] if "/" in path else path.split(".py")[0]
        package[pkg] = package.get(pkg, 0) + n
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + n

    def shares(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, n / total) for f, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": shares(leaf) if total else [],
            "self_by_package": shares(package) if total else [],
            "inclusive": shares(incl) if total else []}


def ratios(results: dict) -> dict:
    """Triage against each peer, with the issue's targets."""
    out: dict = {}
    tri = results.get("triage", {})
    for mode in MODES:
        c32, c1 = f"{mode} c=32", f"{mode} c=1"
        for peer, target, key in (("litellm", 30.0, "rps_vs_litellm_c32"),
                                  ("sglang", 0.3, "rps_vs_sglang_c32")):
            if c32 in tri and c32 in results.get(peer, {}):
                r = tri[c32]["rps"] / results[peer][c32]["rps"]
                out[f"{mode} {key}"] = {"value": round(r, 2), "target": f">= {target}",
                                        "met": r >= target}
        if c1 in tri and c1 in results.get("direct", {}):
            added = (tri[c1]["p50_us"] - results["direct"][c1]["p50_us"]) / 1000
            out[f"{mode} added_p50_ms_c1"] = {"value": round(added, 3), "target": "<= 0.3",
                                               "met": added <= 0.3}
            if c1 in results.get("sglang", {}):
                # This machine's speed moves by 2x within an hour, and an absolute figure with it;
                # the peer's own added latency in the same run moves alike. No target: a figure.
                peer_added = (results["sglang"][c1]["p50_us"] - results["direct"][c1]["p50_us"]) / 1000
                if peer_added > 0:
                    out[f"{mode} added_p50_vs_sglang_c1"] = {"value": round(added / peer_added, 2), "target": None,
                                                             "met": None}
    return out


def versions() -> dict:
    def cmd(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as exc:
            return f"unknown ({exc})"

    def pip_version(venv: str, dist: str) -> str:
        return cmd([str(VENVS / venv / "bin" / "python"), "-c",
                    f"import importlib.metadata as m; print(m.version({dist!r}))"])

    return {
        "nginx": cmd(["nginx", "-v"]),
        "wrk": cmd(["wrk", "-v"]).split(" [")[0] if shutil.which("wrk") else "missing",
        "litellm": pip_version("litellm", "litellm"),
        "sglang-router": pip_version("sglang", "sglang-router"),
        "head": cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "router_commit": cmd(["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "router"]),
        # Uncommitted changes under router/ (Triage is measured from the working tree).
        "router_dirty": cmd(["bash", "-c", f"git -C {ROOT} status --porcelain -- router | wc -l"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    ap.add_argument("--baseline", type=Path,
                    help="a checkout of another commit, measured as target `baseline`")
    ap.add_argument("--duration", type=int, default=4, help="seconds measured per round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per cell; each visits every target in turn")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per round")
    ap.add_argument("--profile", action="store_true",
                    help="also sample Triage with py-spy (bench/.venvs/pyspy) at c=32")
    ap.add_argument("--skip-setup", action="store_true", help="do not run setup.sh")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCIES)),
                    help="comma-separated client connections per cell")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown modes: {sorted(unknown)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if unknown := set(targets) - set(ALL_TARGETS):
        ap.error(f"unknown targets: {sorted(unknown)}")
    if ("baseline" in targets) != (args.baseline is not None):
        ap.error("target `baseline` and --baseline go together")
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()

    if not args.skip_setup:
        subprocess.run(["bash", str(HERE / "setup.sh")], check=True)

    run = Run(args, Path(tempfile.mkdtemp(prefix="triage-bench-")))
    if not TRIAGE.exists():
        for target in set(TRIAGE_TARGETS) & set(targets):
            run.failures[target] = f"{TRIAGE} not found"  # it is still being written
            targets.remove(target)

    (run.workdir / "nginx-tmp").mkdir()
    json_port, sse_port = free_port(), free_port()
    conf = run.workdir / "nginx.conf"
    conf.write_text(nginx_conf(run.workdir, json_port, sse_port))
    nginx = start("nginx", ["nginx", "-p", str(run.workdir), "-c", str(conf),
                            "-g", "daemon off;"], run.workdir)
    upstreams = {"json": f"http://127.0.0.1:{json_port}", "sse": f"http://127.0.0.1:{sse_port}"}
    started = datetime.now(timezone.utc)
    tool_versions = versions()  # before the run: the tree may move on while it runs
    print(f"workdir {run.workdir}; nginx on {json_port} (json) and {sse_port} (sse); "
          f"{args.rounds} rounds of {args.duration} s per cell, each after {args.warmup} s warm-up",
          flush=True)
    try:
        for mode in modes:
            wait_ready(nginx, f"{upstreams[mode]}/v1/chat/completions", mode)
        for mode in modes:
            run.measure_mode(mode, targets, upstreams[mode])
    finally:
        nginx.stop()

    print_tables(run.results, run.failures)
    rat = ratios(run.results)
    if rat:
        print("\nTriage ratios (targets from issue 2):")
        for name, r in rat.items():
            verdict = ("met" if r["met"] else "NOT met") if r["target"] is not None else "(no target)"
            print(f"  {name:28} {r['value']:>9}  target {r['target'] or '-':7} {verdict}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy_overhead-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                    "note": "2 cores shared with other engineers' test runs; wrk, nginx and "
                            "the proxy all compete for them"},
        "settings": {"duration_s_per_round": args.duration, "rounds": args.rounds,
                     "warmup_s_per_round": args.warmup, "wrk_threads": 1,
                     "nginx_workers": 1, "concurrency": args.concurrency, "modes": modes},
        "versions": tool_versions,
        "baseline": None if args.baseline is None else {
            "path": str(args.baseline),
            "commit": subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()},
        "results": run.results,
        "failures": run.failures,
        "triage_ratios": rat,
        "triage_pyspy": run.profiles,
        "workdir_with_logs": str(run.workdir),
    }, indent=2))
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 1 if run.failures else 0


def print_tables(results: dict, failures: dict) -> None:
    for what, why in failures.items():
        print(f"\nnot measured: {what}: {why}")
    for target in ALL_TARGETS:
        if target not in results:
            continue
        print(f"\n{target}\n  {'cell':10} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
              f"{'cpu us/req':>10} {'errors':>7}")
        for cell, r in results[target].items():
            cpu = f"{r['cpu_us_per_req']:.0f}" if r["cpu_us_per_req"] is not None else "-"
            print(f"  {cell:10} {r['rps']:9.0f} {r['p50_us'] / 1000:9.3f} "
                  f"{r['p99_us'] / 1000:9.3f} {cpu:>10} {r['errors']:7d}")


if __name__ == "__main__":
    sys.exit(main())
