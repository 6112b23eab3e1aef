"""Fairness: does `[admission] ordering = "vtc"` protect a light tenant from a heavy one in front
of a saturated backend?

A fake vLLM-like server (in this file) runs one request at a time, first come first served, for
`max_tokens` x `--ms-per-token` each, and reports `vllm:num_requests_running/waiting` on /metrics.
Every request is the same size (`--max-tokens`, same prompt length), so that length scheduling
plays no part: only the order between tenants can change a tenant's latency.

One seeded open-loop arrival schedule is built: `--duration` seconds of arrivals at uniformly
random times (a Poisson process conditioned on its count) at `--load` x the backend's capacity,
exactly 4/5 of them from tenant "heavy" and 1/5 from tenant "light" (header `x-tenant-id`). Since
the offered load exceeds capacity, a backlog builds and who goes first decides who waits. The
same schedule is sent

  (a) `direct`: straight to the backend, which serves it FCFS;
  (b) `vtc`: through Triage with a config naming only the backend plus `[admission] ordering =
      "vtc"` (every other option at its default);
  (c) `default`: through Triage with the backend only (default ordering), for reference.

Each Triage phase starts a fresh Triage and first warms it up with `--warmup` concurrent requests
(tenant "warmup"), which make the backend queue: Triage learns the backend's concurrency (1) from
a /metrics reading that shows requests waiting, and only then holds requests in its own queue.

It reports, per phase and tenant, the count, how many were answered (HTTP 200), the mean, p50 and
p90 client-side end-to-end latency, the light/heavy mean ratio, and as evidence the backend's
service order (the share of light requests among the first half served), the deepest queue the
backend built and Triage's own queue-time metric. Target: in phase (b), light mean <= 0.5 x heavy
mean, with every request answered.

    .venv/bin/python bench/scheduling/fairness.py

Prints a markdown table and writes JSON to bench/results/fairness-<UTC timestamp>.json. Exits 1
if the target is missed. Only 127.0.0.1 traffic; the backend and every Triage are stopped at the
end, also on errors. With the defaults it takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixed_burst import MODEL, RESULTS, ROOT, FakeVllm, Served, TriageProcess, idle_s  # noqa: E402

TARGET_RATIO = 0.5
HEAVY, LIGHT, WARMUP = "heavy", "light", "warmup"  # "heavy" and "light": same length, same prompt size
TENANT_HEADER = "x-tenant-id"
# Triage reads an idle backend's /metrics once a second and trusts a reading for 2.5 s: this long
# a pause lets the warm-up's queued reading age out, so the phase starts from an idle reading.
SETTLE_S = 2.5
PROMPT_RE = re.compile(r"^\[(\w+)#(\d+)\]")


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    tenant: str
    at_s: float  # from the start of the phase


@dataclass(slots=True)
class Outcome:
    index: int
    tenant: str
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_s: float
    late_s: float  # how far after its scheduled time the client sent it (open loop kept?)
    predicted_tokens: int | None  # Triage's x-triage-predicted-tokens; None when direct
    error: str = ""


def tenant_of(served: Served) -> str:
    """The tenant a served request came from, read from its prompt's tag."""
    match = PROMPT_RE.match(served.prompt)
    return match.group(1) if match else "?"


class OrderedTriage(TriageProcess):
    """mixed_burst's Triage process, its config (backend only) plus an `[admission] ordering`."""

    def __init__(self, backend_url: str, workdir: Path, ordering: str | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(backend_url, workdir)
        if ordering is not None:
            self.config_path.write_text(f'[admission]\nordering = "{ordering}"\n\n' + self.config_path.read_text())


def make_schedule(duration_s: float, rate_per_s: float, seed: int) -> list[Arrival]:
    """Open loop: a count rounded to a multiple of 5 (exactly 4 heavy per light), at uniformly
    random times over the duration, tenants in a seeded shuffled order."""
    rng = random.Random(seed)
    count = max(5, 5 * round(duration_s * rate_per_s / 5))
    times = sorted(rng.uniform(0.0, duration_s) for _ in range(count))
    tenants = [LIGHT] * (count // 5) + [HEAVY] * (count - count // 5)
    rng.shuffle(tenants)
    return [Arrival(i, tenant, at) for i, (tenant, at) in enumerate(zip(tenants, times))]


async def send(session: ClientSession, base_url: str, index: int, tenant: str, max_tokens: int,
               late_s: float = 0.0) -> Outcome:
    # Same prompt length for every tenant; the tag lets the backend say whose request it served.
    body = {"model": MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"[{tenant}#{index:04d}] Summarise this ticket in a few lines."}]}
    start = time.perf_counter()
    try:
        async with session.post(f"{base_url}/v1/chat/completions", json=body,
                                headers={TENANT_HEADER: tenant}) as response:
            await response.read()
            predicted = response.headers.get("x-triage-predicted-tokens")
            return Outcome(index, tenant, response.status, time.perf_counter() - start, late_s,
                           int(predicted) if predicted is not None else None)
    except (ClientError, TimeoutError) as error:
        return Outcome(index, tenant, 0, time.perf_counter() - start, late_s, None, f"{type(error).__name__}: {error}")


async def run_schedule(session: ClientSession, base_url: str, schedule: list[Arrival], max_tokens: int) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1

    async def one(arrival: Arrival) -> Outcome:
        await asyncio.sleep(max(0.0, t0 + arrival.at_s - loop.time()))
        return await send(session, base_url, arrival.index, arrival.tenant, max_tokens,
                          loop.time() - (t0 + arrival.at_s))

    return list(await asyncio.gather(*(one(a) for a in schedule)))


async def warm_up(session: ClientSession, triage_url: str, count: int, max_tokens: int) -> None:
    """Concurrent requests that make the backend queue, so Triage learns its concurrency."""
    outcomes = await asyncio.gather(*(send(session, triage_url, 9000 + i, WARMUP, max_tokens) for i in range(count)))
    failed = [o for o in outcomes if o.status != 200]
    if failed:
        raise RuntimeError(f"warm-up request failed: {failed[0]}")


def tenant_summary(outcomes: list[Outcome], tenant: str) -> dict[str, Any]:
    mine = [o for o in outcomes if o.tenant == tenant]
    ok = [o.latency_s for o in mine if o.status == 200]
    return {
        "requests": len(mine),
        "answered": len(ok),
        "mean_s": statistics.fmean(ok) if ok else None,
        "p50_s": statistics.median(ok) if ok else None,
        "p90_s": statistics.quantiles(ok, n=10, method="inclusive")[8] if len(ok) >= 2 else None,
    }


def service_evidence(served: list[Served]) -> dict[str, Any]:
    """Who the backend served, and how long each tenant's requests sat in the backend's own queue."""
    half = served[: len(served) // 2]
    by_tenant = {t: [s.start - s.arrived for s in served if tenant_of(s) == t] for t in (HEAVY, LIGHT)}
    return {
        "served": len(served),
        # Compare with phase direct (FCFS): a fair share serves the light tenant's few requests early.
        "light_share_first_half": (sum(tenant_of(s) == LIGHT for s in half) / len(half)) if half else None,
        "backend_queue_mean_s": {t: (statistics.fmean(v) if v else None) for t, v in by_tenant.items()},
        "idle_s": idle_s(served),
    }


def queue_time_lines(metrics_text: str) -> dict[str, float]:
    """Triage's queue-time histogram totals (all priorities together)."""
    total = {"count": 0.0, "sum_s": 0.0, "at_once": 0.0}
    for line in metrics_text.splitlines():
        if line.startswith("triage_request_queue_time_seconds_count"):
            total["count"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("triage_request_queue_time_seconds_sum"):
            total["sum_s"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("triage_request_queue_time_seconds_bucket") and 'le="0.001"' in line:
            total["at_once"] += float(line.rsplit(" ", 1)[1])
    return total


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def run_phase(name: str, ordering: str | None, backend: FakeVllm, schedule: list[Arrival],
                    args: argparse.Namespace, workdir: Path, timeout: ClientTimeout) -> dict[str, Any]:
    triage: OrderedTriage | None = None
    try:
        async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as session:
            url = backend.url
            metrics_before: dict[str, float] | None = None
            warm_peak_before: int | None = None
            if name != "direct":
                triage = OrderedTriage(backend.url, workdir / name, ordering)
                await triage.start()
                url = triage.url
                await asyncio.sleep(SETTLE_S)  # Triage has read the idle backend's /metrics
                backend.peak_waiting = 0
                await warm_up(session, url, args.warmup, args.max_tokens)
                warm_peak_before = backend.peak_waiting
                await asyncio.sleep(SETTLE_S)
                async with session.get(f"{url}/metrics") as response:
                    metrics_before = queue_time_lines(await response.text())
            print(f"phase {name} ({len(schedule)} arrivals over {args.duration:g} s) ...", flush=True)
            backend.peak_waiting = 0
            served_before = len(backend.served)
            started = time.perf_counter()
            outcomes = await run_schedule(session, url, schedule, args.max_tokens)
            wall_s = time.perf_counter() - started
            served = [s for s in backend.served[served_before:] if tenant_of(s) in (HEAVY, LIGHT)]
            phase: dict[str, Any] = {
                "ordering": ordering if name != "direct" else "backend FCFS",
                "wall_s": wall_s,
                "tenants": {t: tenant_summary(outcomes, t) for t in (HEAVY, LIGHT)},
                "backend": service_evidence(served),
                "backend_peak_waiting": backend.peak_waiting,
                "warmup_backend_peak_waiting": warm_peak_before,
                "max_send_late_s": max(o.late_s for o in outcomes),
                "predicted_tokens": {t: sorted({o.predicted_tokens for o in outcomes if o.tenant == t
                                                and o.predicted_tokens is not None}) for t in (HEAVY, LIGHT)},
                "errors": sorted({o.error or str(o.status) for o in outcomes if o.status != 200}),
                "outcomes": [asdict(o) for o in outcomes],
                "served_order": "".join("L" if tenant_of(s) == LIGHT else "h" for s in served),
            }
            if triage is not None and metrics_before is not None:
                async with session.get(f"{url}/metrics") as response:
                    after = queue_time_lines(await response.text())
                count = after["count"] - metrics_before["count"]
                phase["triage_queue"] = {
                    "placed": count,
                    "waited_over_1ms": round(count - (after["at_once"] - metrics_before["at_once"])),
                    "mean_s": (after["sum_s"] - metrics_before["sum_s"]) / count if count else None,
                }
            heavy, light = phase["tenants"][HEAVY], phase["tenants"][LIGHT]
            phase["light_over_heavy"] = (light["mean_s"] / heavy["mean_s"]
                                         if light["mean_s"] and heavy["mean_s"] else None)
            return phase
    finally:
        if triage is not None:
            await triage.stop()


async def main_async(args: argparse.Namespace) -> int:
    s_per_token = args.ms_per_token / 1000.0
    service_s = args.max_tokens * s_per_token
    schedule = make_schedule(args.duration, args.load / service_s, args.seed)
    work_s = len(schedule) * service_s
    backend = FakeVllm(s_per_token)
    # Bounded: the last request waits at most for all the work offered, plus slack.
    timeout = ClientTimeout(total=60.0 + args.duration + work_s)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fairness-") as tmp:
        try:
            await backend.start()
            n_light = sum(a.tenant == LIGHT for a in schedule)
            print(f"backend {backend.url}: {len(schedule)} arrivals ({len(schedule) - n_light} heavy, {n_light} light) "
                  f"over {args.duration:g} s = {args.load:g}x capacity; {work_s:.1f} s of backend work", flush=True)
            for name, ordering in (("direct", None), ("vtc", "vtc"), ("default", None)):
                phases[name] = await run_phase(name, ordering, backend, schedule, args, Path(tmp), timeout)
                await asyncio.sleep(SETTLE_S)
        finally:
            await backend.stop()

    vtc = phases["vtc"]
    all_answered = all(s["answered"] == s["requests"] for s in vtc["tenants"].values())
    met = vtc["light_over_heavy"] is not None and vtc["light_over_heavy"] <= TARGET_RATIO and all_answered

    print()
    print("| phase | tenant | count | answered | mean s | p50 s | p90 s | light/heavy mean |")
    print("|---|---|---|---|---|---|---|---|")
    for name, phase in phases.items():
        for tenant in (HEAVY, LIGHT):
            s = phase["tenants"][tenant]
            ratio = fmt(phase["light_over_heavy"]) if tenant == LIGHT else ""
            print(f"| {name} | {tenant} | {s['requests']} | {s['answered']} | {fmt(s['mean_s'])} | "
                  f"{fmt(s['p50_s'])} | {fmt(s['p90_s'])} | {ratio} |")
    print()
    print(f"vtc: light mean / heavy mean = {fmt(vtc['light_over_heavy'])} (target <= {TARGET_RATIO}, every request "
          f"answered: {'met' if met else 'NOT met'})")
    for name, phase in phases.items():
        b = phase["backend"]
        q = phase.get("triage_queue")
        print(f"{name}: light share of first half served {fmt(b['light_share_first_half'], 2)}; "
              f"backend queue mean heavy {fmt(b['backend_queue_mean_s']['heavy'])} s, light "
              f"{fmt(b['backend_queue_mean_s']['light'])} s; backend peak waiting {phase['backend_peak_waiting']}"
              + (f" (warm-up {phase['warmup_backend_peak_waiting']})" if phase['warmup_backend_peak_waiting'] is not None else "")
              + f"; backend idle {fmt(b['idle_s'])} s; max send lateness {fmt(phase['max_send_late_s'])} s"
              + (f"; Triage queue: {q['waited_over_1ms']}/{q['placed']:.0f} waited, mean {fmt(q['mean_s'])} s"
                 if q else "")
              + (f"; predicted tokens {phase['predicted_tokens']}" if name != "direct" else ""))
        if phase["errors"]:
            print(f"  {name} errors: {phase['errors']}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"fairness-{stamp}.json"
    path.write_text(json.dumps({
        "args": vars(args), "target_ratio": TARGET_RATIO, "target_met": met,
        "schedule": [asdict(a) for a in schedule], "phases": phases,
    }, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds over which requests arrive")
    parser.add_argument("--load", type=float, default=1.5, help="offered load as a multiple of the backend's capacity")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--ms-per-token", type=float, default=5.0, help="backend time per generated token")
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival times and tenant order")
    parser.add_argument("--warmup", type=int, default=6,
                        # 6: the backend shows a queue for 5 services (1.6 s at the defaults), longer
                        # than Triage's 1 s idle /metrics interval, so a reading is sure to see it.
                        help="concurrent warm-up requests through each Triage (they make the backend queue)")
    args = parser.parse_args()
    if args.duration <= 0 or args.load <= 0 or args.max_tokens < 1 or args.ms_per_token <= 0 or args.warmup < 2:
        parser.error("need --duration > 0, --load > 0, --max-tokens >= 1, --ms-per-token > 0 and --warmup >= 2")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
