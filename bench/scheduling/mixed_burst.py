"""Mixed burst: does Triage's default configuration schedule shortest predicted work first in
front of a saturated backend?

A fake vLLM-like server (in this file) runs one request at a time, in arrival order, for
`max_tokens` x `--ms-per-token` each, and reports `vllm:num_requests_running/waiting` on /metrics.
Triage runs as a subprocess with a config that names only that backend (every other option at
its default). After a sequential warm-up through Triage (so its length predictor learns what
"Answer in one word" and "Write a long, detailed essay" lead to), the same burst of `--burst`
requests, half short and half long in a seeded shuffled order, all at the default priority, is
sent (a) straight to the backend, which serves it FCFS, then (b) through Triage. It reports the
client-side end-to-end latency of each phase (mean, p50, p90, short and long means), how many
were answered, and Triage's mean over the direct mean; target: <= 0.7 with every request answered.

Triage holds requests back only once it has learned the backend's concurrency from a /metrics
reading that shows requests waiting; in the default order it reads that during phase (a).
`--order triage-first` runs phase (b) first, before Triage has ever seen the backend queue.

    .venv/bin/python bench/scheduling/mixed_burst.py

Prints a markdown table and writes JSON to bench/results/mixed_burst-<UTC timestamp>.json. Exits
1 if the target is missed or a request was not answered. Only 127.0.0.1 traffic; the backend and
Triage are stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results"
MODEL = "smol"
TARGET_RATIO = 0.7
READY_PREFIX = "Triage listening on "
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# Triage reads an idle backend's /metrics once a second and trusts a reading for 2.5 s: this
# long a pause lets a reading of the idle backend replace one taken mid-burst.
SETTLE_S = 2.0

SHORT_QUESTIONS = [
    "which planet is the largest in the solar system?",
    "what colour is a ripe banana?",
    "what is the capital of France?",
    "which metal is liquid at room temperature?",
    "what animal is known as the king of the jungle?",
    "what gas do plants absorb from the air?",
    "which ocean is the largest?",
    "what is frozen water called?",
]
LONG_TOPICS = [
    "the history of the printing press",
    "how vaccines train the immune system",
    "the causes of the French Revolution",
    "the economics of renewable energy",
    "the evolution of programming languages",
    "the ecology of coral reefs",
    "the invention of the telephone",
    "the architecture of medieval cathedrals",
]


@dataclass(frozen=True, slots=True)
class Request:
    kind: str  # "short" or "long"
    prompt: str
    max_tokens: int


@dataclass(slots=True)
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_s: float
    # Triage's x-triage-predicted-tokens header (its median prediction); None when direct.
    predicted_tokens: int | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Served:
    """One request the fake backend served: what was asked, when it arrived, ran and ended."""

    prompt: str
    max_tokens: int
    arrived: float
    start: float
    end: float


def idle_s(served: list[Served]) -> float | None:
    """How long the backend sat idle between the first start and the last end."""
    if not served:
        return None
    return served[-1].end - served[0].start - sum(s.end - s.start for s in served)


class FakeVllm:
    """A vLLM whose batch is full: one request at a time, first come first served, each for
    `max_tokens` x `s_per_token`, with the queue it builds shown on /metrics."""

    def __init__(self, s_per_token: float) -> None:
        self.s_per_token = s_per_token
        # asyncio.Lock wakes its waiters in FIFO order and a newcomer cannot overtake them: FCFS.
        self._lock = asyncio.Lock()
        self.running = 0
        self.waiting = 0
        # The deepest queue behind the running request since the last reset.
        self.peak_waiting = 0
        # Each request in the order it was served: who went first, and how long the backend sat
        # idle while requests were outstanding.
        self.served: list[Served] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([
            web.post("/v1/chat/completions", self._chat),
            web.get("/metrics", self._metrics),
            web.get("/health", self._health),
            web.get("/v1/models", self._models),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Bound here, so the port is ours before anyone else can take it.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.json()
        max_tokens = int(body.get("max_tokens") or 16)
        prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        prompt_tokens = max(1, len(prompt) // 4)
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting - (0 if self.running else 1))
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        start = time.perf_counter()
        try:
            self.running = 1
            await asyncio.sleep(max_tokens * self.s_per_token)
        finally:
            self.running = 0
            self._lock.release()
            self.served.append(Served(prompt, max_tokens, arrived, start, time.perf_counter()))
        return web.json_response({
            "id": f"chatcmpl-{len(self.served)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(["tok"] * max_tokens)},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                      "total_tokens": prompt_tokens + max_tokens},
        })

    async def _metrics(self, request: web.Request) -> web.Response:
        label = f'{{model_name="{MODEL}"}}'
        text = (f"vllm:num_requests_running{label} {self.running}\n"
                f"vllm:num_requests_waiting{label} {self.waiting}\n"
                f"vllm:kv_cache_usage_perc{label} 0.0\n")
        return web.Response(text=text, content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


class TriageProcess:
    """`triage serve` with a config naming only the backend; its output is kept for errors."""

    def __init__(self, backend_url: str, workdir: Path) -> None:
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(
            '[server]\nhost = "127.0.0.1"\n\n'
            f'[[backends]]\nname = "fake"\nurl = "{backend_url}"\nkind = "vllm"\nmodels = ["{MODEL}"]\n'
        )
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=50)
        self.url = ""

    @property
    def pid(self) -> int:
        """The process id of the running `triage serve`."""
        assert self._process is not None, "not started"
        return self._process.pid

    async def start(self) -> None:
        # Port 0: Triage binds a free port itself and prints the URL it got.
        self._process = await asyncio.create_subprocess_exec(
            str(PYTHON), "-m", "triage_router.router.cli", "serve", "--config", str(self.config_path), "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.url:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"Triage did not start within {STARTUP_TIMEOUT_S:g} s:\n" + "\n".join(self.output))
            raw = await asyncio.wait_for(self._process.stdout.readline(), remaining)
            if not raw:
                raise RuntimeError("Triage exited during start-up:\n" + "\n".join(self.output))
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if line.startswith(READY_PREFIX):
                self.url = line[len(READY_PREFIX):].strip()
        # Keep reading, or a full pipe would block Triage's logging.
        self._drain = asyncio.create_task(self._keep_reading())

    async def _keep_reading(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while raw := await self._process.stdout.readline():
            self.output.append(raw.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)


def make_request(kind: str, index: int, short_tokens: int, long_tokens: int) -> Request:
    if kind == "short":
        return Request(kind, f"Answer in one word: {SHORT_QUESTIONS[index % len(SHORT_QUESTIONS)]}", short_tokens)
    return Request(kind, f"Write a long, detailed essay about {LONG_TOPICS[index % len(LONG_TOPICS)]}.", long_tokens)


def make_burst(size: int, seed: int, short_tokens: int, long_tokens: int) -> list[Request]:
    kinds = ["short"] * (size // 2) + ["long"] * (size - size // 2)
    random.Random(seed).shuffle(kinds)
    return [make_request(kind, i, short_tokens, long_tokens) for i, kind in enumerate(kinds)]


async def send(session: ClientSession, base_url: str, request: Request) -> Outcome:
    body = {"model": MODEL, "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens}
    start = time.perf_counter()
    try:
        async with session.post(f"{base_url}/v1/chat/completions", json=body) as response:
            await response.read()
            predicted = response.headers.get("x-triage-predicted-tokens")
            return Outcome(request.kind, response.status, time.perf_counter() - start,
                           int(predicted) if predicted is not None else None)
    except (ClientError, TimeoutError) as error:
        return Outcome(request.kind, 0, time.perf_counter() - start, None, f"{type(error).__name__}: {error}")


async def run_burst(session: ClientSession, base_url: str, burst: list[Request]) -> list[Outcome]:
    # One gather: every request is on the wire within the same event-loop turn.
    return list(await asyncio.gather(*(send(session, base_url, request) for request in burst)))


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    ok = [o.latency_s for o in outcomes if o.status == 200]
    by_kind = {kind: [o.latency_s for o in outcomes if o.status == 200 and o.kind == kind] for kind in ("short", "long")}
    return {
        "requests": len(outcomes),
        "answered": len(ok),
        "mean_s": statistics.fmean(ok) if ok else None,
        "p50_s": statistics.median(ok) if ok else None,
        "p90_s": statistics.quantiles(ok, n=10, method="inclusive")[8] if len(ok) >= 2 else None,
        "short_mean_s": statistics.fmean(by_kind["short"]) if by_kind["short"] else None,
        "long_mean_s": statistics.fmean(by_kind["long"]) if by_kind["long"] else None,
    }


def ideal_mean_s(service_s: list[float]) -> float:
    """Mean completion time of jobs all present at 0, run one at a time in the given order."""
    done, total = 0.0, 0.0
    for service in service_s:
        done += service
        total += done
    return total / len(service_s)


def queue_time_evidence(metrics_text: str) -> tuple[list[str], int]:
    """Triage's queue-time count lines, and how many requests waited over 1 ms for a slot."""
    counts = [line for line in metrics_text.splitlines() if line.startswith("triage_request_queue_time_seconds_count")]
    total = sum(float(line.rsplit(" ", 1)[1]) for line in counts)
    # The first bucket (le="0.001") holds the requests placed at once.
    at_once = sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
                  if line.startswith("triage_request_queue_time_seconds_bucket") and 'le="0.001"' in line)
    return counts, round(total - at_once)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


async def main_async(args: argparse.Namespace) -> int:
    s_per_token = args.ms_per_token / 1000.0
    burst = make_burst(args.burst, args.seed, args.short_tokens, args.long_tokens)
    work_s = sum(r.max_tokens for r in burst) * s_per_token
    backend = FakeVllm(s_per_token)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mixed_burst-") as workdir:
        triage: TriageProcess | None = None
        try:
            await backend.start()
            triage = TriageProcess(backend.url, Path(workdir))
            await triage.start()
            print(f"backend {backend.url}, Triage {triage.url}; burst of {args.burst} "
                  f"({work_s:.2f} s of backend work)", flush=True)
            # Bounded: a request waits at most for the whole burst ahead of it, several times over.
            timeout = ClientTimeout(total=30.0 + 3 * work_s)
            async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as session:
                await asyncio.sleep(SETTLE_S)  # Triage has read the idle backend's /metrics
                warmup = [make_request(kind, i, args.short_tokens, args.long_tokens)
                          for i in range(args.warmup) for kind in ("short", "long")]
                for request in warmup:  # one at a time: the backend never queues
                    outcome = await send(session, triage.url, request)
                    if outcome.status != 200:
                        raise RuntimeError(f"warm-up request failed: {outcome}")
                order = ["direct", "triage"] if args.order == "direct-first" else ["triage", "direct"]
                for name in order:
                    await asyncio.sleep(SETTLE_S)
                    served_before = len(backend.served)
                    print(f"phase {name} ...", flush=True)
                    outcomes = await run_burst(session, backend.url if name == "direct" else triage.url, burst)
                    served = backend.served[served_before:]
                    phases[name] = {
                        "summary": summarize(outcomes),
                        "served_order": "".join("S" if s.max_tokens == args.short_tokens else "L" for s in served),
                        # From the first start to the last end, the time nothing ran.
                        "backend_idle_s": idle_s(served),
                        "outcomes": [asdict(o) for o in outcomes],
                    }
                async with session.get(f"{triage.url}/metrics") as response:
                    metrics_text = await response.text()
        finally:
            if triage is not None:
                await triage.stop()
            await backend.stop()

    direct, routed = phases["direct"]["summary"], phases["triage"]["summary"]
    ratio = routed["mean_s"] / direct["mean_s"] if routed["mean_s"] and direct["mean_s"] else None
    all_answered = direct["answered"] == routed["answered"] == args.burst
    met = ratio is not None and ratio <= TARGET_RATIO and all_answered
    service_s = [r.max_tokens * s_per_token for r in burst]
    ideal = {"fcfs_mean_s": ideal_mean_s(service_s), "sjf_mean_s": ideal_mean_s(sorted(service_s))}
    count_lines, waited = queue_time_evidence(metrics_text)
    predicted = {kind: sorted({o["predicted_tokens"] for o in phases["triage"]["outcomes"] if o["kind"] == kind})
                 for kind in ("short", "long")}

    print()
    print("| phase | answered | mean s | p50 s | p90 s | short mean s | long mean s |")
    print("|---|---|---|---|---|---|---|")
    for name in ("direct", "triage"):
        s = phases[name]["summary"]
        print(f"| {name} | {s['answered']}/{s['requests']} | {fmt(s['mean_s'])} | {fmt(s['p50_s'])} | "
              f"{fmt(s['p90_s'])} | {fmt(s['short_mean_s'])} | {fmt(s['long_mean_s'])} |")
    print()
    print(f"Triage mean / direct mean: {fmt(ratio)} (target <= {TARGET_RATIO}, every request answered: "
          f"{'met' if met else 'NOT met'})")
    print(f"ideal means with no overhead: FCFS in burst order {ideal['fcfs_mean_s']:.3f} s, "
          f"shortest first {ideal['sjf_mean_s']:.3f} s")
    for name in ("direct", "triage"):
        print(f"backend, {name}: idle {fmt(phases[name]['backend_idle_s'])} s within the burst; "
              f"service order {phases[name]['served_order']}")
    print(f"Triage's predicted tokens in the burst: short {predicted['short']}, long {predicted['long']}")
    print(f"Triage queue time ({len(warmup)} warm-up + {args.burst} burst requests; {waited} waited over 1 ms):")
    for line in count_lines:
        print(f"  {line}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"mixed_burst-{stamp}.json"
    path.write_text(json.dumps({
        "args": vars(args), "ratio": ratio, "target_ratio": TARGET_RATIO, "target_met": met,
        "ideal": ideal, "predicted_tokens": predicted, "triage_waited": waited,
        "triage_queue_time_counts": count_lines, "phases": phases,
    }, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=40, help="requests in the burst, half short and half long")
    parser.add_argument("--short-tokens", type=int, default=16, help="max_tokens of a short request")
    parser.add_argument("--long-tokens", type=int, default=256, help="max_tokens of a long request")
    parser.add_argument("--ms-per-token", type=float, default=2.0, help="backend time per generated token")
    parser.add_argument("--seed", type=int, default=1, help="seed of the burst's shuffled order")
    parser.add_argument("--warmup", type=int, default=20, help="sequential warm-up requests of each kind")
    parser.add_argument("--order", choices=("direct-first", "triage-first"), default="direct-first",
                        help="which phase runs first (triage-first: before Triage has seen the backend queue)")
    args = parser.parse_args()
    if args.burst < 2 or args.short_tokens >= args.long_tokens or args.short_tokens < 1 or args.ms_per_token <= 0:
        parser.error("need --burst >= 2, 1 <= --short-tokens < --long-tokens and --ms-per-token > 0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
