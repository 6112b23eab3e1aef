"""Abuse: hostile input against Triage while normal traffic flows. Does every hostile request
get its documented answer, none a 5xx; do the router's memory and file descriptors stay
bounded; and how much slower is normal traffic meanwhile?

Triage runs with its defaults (the config names one backend) in front of common.py's vLLM-like
fake (`--ms-per-token` 1, 64 requests at a time, vLLM's check of `max_tokens`). Normal traffic is
an open loop of `--rate` non-streamed 16-token chat requests a second, measured end to end: for
`--baseline-s` alone, then for `--attack-s` while a separate attacker process sends, over raw
sockets (docs/configuration.md, `[server]`, gives each answer):

| attack | expected |
|---|---|
| slow_headers: request line and headers dripped a byte every `--drip-s`, endlessly | 408 after `header_timeout_s` (30 s), then closed |
| idle: a connection that sends nothing | closed after `keep_alive_s` (75 s) |
| slow_body: headers whole, the body dripped a byte every `--drip-s` | 408 after `body_deadline_s` (60 s) |
| big_body_cl / big_body_chunked: 9 MiB, with content-length / chunked | 413 |
| many_headers: 5,000 headers; big_header: one of 128 KiB; endless_header: 16 MiB of one header, never ended | 431 |
| bad_json, bad_utf8, wrong_types, huge_max_tokens (10^9 and -5: the backend's 400; 10^30) | 400 |
| unknown_model; not_found: unknown paths, GET and POST | 404 |
| garbage: bytes that are not HTTP | 400 from the HTTP server, or closed |
| drop_mid_headers / drop_mid_body / drop_mid_stream: the client leaves mid-request | nothing to answer |

The router's RSS and open file descriptors (/proc/<pid>/status and /proc/<pid>/fd) are read
every 0.5 s. Checks: every hostile request got an expected answer and none a 5xx; every normal
request answered 200, their p50 under attack within `--p50-factor` of the baseline's and p99
within `--p99-factor`; peak RSS under attack within the baseline's plus `--rss-peak-mib`, RSS
after the attack within the baseline's plus `--rss-after-mib`, and open fds `--settle-s` after
the attack within the baseline's plus 8.

    .venv/bin/python bench/reliability/abuse.py

Prints markdown tables, writes JSON to bench/results/abuse-<UTC timestamp>.json, exits 1 if a
check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ProcWatch, StreamingFake, post_chat, read_proc, run_header, save_result
from run import fmt, pct
from mixed_burst import MODEL, TriageProcess

MIB = 1 << 20
BIG_BODY = 9 * MIB  # over the default max_body_bytes, 8 MiB
PATH = "/v1/chat/completions"

# Each fast attack: the outcomes it may get ("dropped": the attacker itself left), how many run
# at once, and the pause between two. 9 MiB bodies cost both sides real CPU: fewer of them.
FAST_ATTACKS: dict[str, tuple[frozenset[str], int, float]] = {
    "big_body_cl": (frozenset({"413"}), 1, 0.5),
    "big_body_chunked": (frozenset({"413"}), 1, 0.5),
    "many_headers": (frozenset({"431"}), 1, 0.1),
    "big_header": (frozenset({"431"}), 1, 0.1),
    "endless_header": (frozenset({"431"}), 1, 0.5),
    "bad_json": (frozenset({"400"}), 1, 0.05),
    "bad_utf8": (frozenset({"400"}), 1, 0.05),
    "wrong_types": (frozenset({"400"}), 1, 0.05),
    "huge_max_tokens": (frozenset({"400"}), 1, 0.05),
    "unknown_model": (frozenset({"404"}), 1, 0.05),
    "not_found": (frozenset({"404"}), 4, 0.0),
    "garbage": (frozenset({"400", "closed"}), 1, 0.05),
    "drop_mid_headers": (frozenset({"dropped"}), 1, 0.05),
    "drop_mid_body": (frozenset({"dropped"}), 1, 0.05),
    "drop_mid_stream": (frozenset({"dropped"}), 1, 0.05),
}
# Each slow attack: the outcomes it may get ("open": still open when the phase ended).
SLOW_ATTACKS: dict[str, frozenset[str]] = {
    "slow_headers": frozenset({"408"}),
    "idle": frozenset({"closed"}),
    "slow_body": frozenset({"408"}),
}
WRONG_TYPES = [
    {"model": MODEL, "messages": "hello"},
    {"model": 5, "messages": [{"role": "user", "content": "hi"}]},
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"},
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
    {"model": MODEL, "messages": []},
    [1, 2, 3],
]
HUGE_MAX_TOKENS = [10**9, -5, 10**30]
NOT_FOUND = [("GET", "/nope"), ("POST", "/nope"), ("GET", "/v1/nope"), ("POST", "/v1/nope"),
             ("GET", "/admin/../../etc/passwd"), ("POST", "/v2/chat/completions")]


def request_head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: triage", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_request(payload: Any, path: str = PATH, method: str = "POST") -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request_head(method, path, [("content-type", "application/json"), ("content-length", str(len(body)))]) + body


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


async def exchange(host: str, port: int, parts: list[bytes], wait_s: float, drop_after_s: float | None = None) -> str:
    """Send `parts` (while reading) and return the answer's status code, or "closed" when the
    server closed without one, "timeout" when none came in `wait_s`, "dropped" when we left
    after `drop_after_s`."""
    reader, writer = await asyncio.open_connection(host, port)

    async def write() -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()

    writing = asyncio.ensure_future(write())
    try:
        if drop_after_s is not None:
            await asyncio.sleep(drop_after_s)
            return "dropped"
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), wait_s)
        return line.split(b" ")[1].decode()
    except (asyncio.IncompleteReadError, ConnectionError):
        return "closed"
    except TimeoutError:
        return "timeout"
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        writer.close()


def attack_parts(kind: str, n: int) -> tuple[list[bytes], float | None]:
    """What one request of a fast attack sends, and when its client leaves (None: it waits)."""
    if kind == "big_body_cl":
        head = request_head("POST", PATH, [("content-type", "application/json"), ("content-length", str(BIG_BODY))])
        return [head] + [b"a" * MIB] * (BIG_BODY // MIB), None
    if kind == "big_body_chunked":
        head = request_head("POST", PATH, [("content-type", "application/json"), ("transfer-encoding", "chunked")])
        chunk = b"%x\r\n" % (64 * 1024) + b"a" * (64 * 1024) + b"\r\n"
        return [head] + [chunk * 16] * (BIG_BODY // MIB) + [b"0\r\n\r\n"], None
    if kind == "many_headers":
        return [request_head("POST", PATH, [(f"x-h{i}", "v") for i in range(5000)])], None
    if kind == "big_header":
        return [request_head("POST", PATH, [("x-big", "a" * (128 * 1024))])], None
    if kind == "endless_header":
        # 16 MiB of one header that never ends: only a refusal while it arrives answers it.
        return [b"POST /v1/chat/completions HTTP/1.1\r\nhost: triage\r\nx-endless: "] + [b"a" * MIB] * 16, None
    if kind == "bad_json":
        return [json_request(b'{"model": "smol", "messages": [')], None
    if kind == "bad_utf8":
        return [json_request(b'{"model": "smol", "messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}')], None
    if kind == "wrong_types":
        return [json_request(WRONG_TYPES[n % len(WRONG_TYPES)])], None
    if kind == "huge_max_tokens":
        return [json_request(chat(max_tokens=HUGE_MAX_TOKENS[n % len(HUGE_MAX_TOKENS)]))], None
    if kind == "unknown_model":
        return [json_request({"model": f"no-such-model-{n}", "messages": [{"role": "user", "content": "hi"}]})], None
    if kind == "not_found":
        method, path = NOT_FOUND[n % len(NOT_FOUND)]
        return [json_request(chat(), path, method)], None
    if kind == "garbage":
        return [b"\x16\x03\x01\x02\x00 this is not HTTP at all\r\n\r\n"], None
    if kind == "drop_mid_headers":
        return [json_request(chat())[:40]], 0.05
    if kind == "drop_mid_body":
        whole = json_request(chat("x" * 2000))
        return [whole[:len(whole) - 1000]], 0.05
    if kind == "drop_mid_stream":
        # 2,000 tokens at 1 ms: the stream is well under way when the client leaves.
        return [json_request(chat(stream=True, max_tokens=2000))], 0.3
    raise ValueError(kind)


async def fast_attacker(kind: str, host: str, port: int, end_at: float, sink: list[dict[str, Any]]) -> None:
    expected, _, gap = FAST_ATTACKS[kind]
    n = 0
    while time.monotonic() < end_at:
        parts, drop_after = attack_parts(kind, n)
        started = time.monotonic()
        outcome = await exchange(host, port, parts, wait_s=30.0, drop_after_s=drop_after)
        sink.append({"kind": kind, "outcome": outcome, "seconds": round(time.monotonic() - started, 4),
                     "expected": outcome in expected})
        n += 1
        await asyncio.sleep(gap)


def drip(kind: str) -> Iterator[int]:
    """The bytes a slow attack sends, one at a time: a header block or a body that never ends."""
    if kind == "slow_headers":
        yield from b"POST /v1/chat/completions HTTP/1.1\r\nhost: triage\r\n"
        while True:
            yield from b"x-drip: a\r\n"
    while True:
        yield from b" "


async def slow_attacker(kind: str, host: str, port: int, end_at: float, drip_s: float, sink: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    if kind == "slow_body":
        writer.write(request_head("POST", PATH, [("content-type", "application/json"), ("content-length", "100000")]))
    source = None if kind == "idle" else drip(kind)
    outcome = "open"
    try:
        while time.monotonic() < end_at:
            if source is not None:
                writer.write(bytes([next(source)]))
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), drip_s)
                outcome = line.split(b" ")[1].decode()
                break
            except TimeoutError:
                continue
    except (asyncio.IncompleteReadError, ConnectionError):
        outcome = "closed"
    finally:
        writer.close()
    sink.append({"kind": kind, "outcome": outcome, "seconds": round(time.monotonic() - started, 3),
                 "expected": outcome in SLOW_ATTACKS[kind]})


async def attack(host: str, port: int, attack_s: float, slow_conns: int, drip_s: float) -> list[dict[str, Any]]:
    end_at = time.monotonic() + attack_s
    sink: list[dict[str, Any]] = []
    tasks = [fast_attacker(kind, host, port, end_at, sink)
             for kind, (_, copies, _) in FAST_ATTACKS.items() for _ in range(copies)]
    tasks += [slow_attacker(kind, host, port, end_at, drip_s, sink) for kind in SLOW_ATTACKS for _ in range(slow_conns)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    # An attacker that could not even connect is a finding too.
    sink.extend({"kind": "attacker", "outcome": repr(o)[:120], "seconds": 0.0, "expected": False}
                for o in outcomes if isinstance(o, BaseException))
    return sink


def attacker_process(host: str, port: int, attack_s: float, slow_conns: int, drip_s: float,
                     queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The attack in its own process: its CPU work (9 MiB bodies) must not stall the client that
    measures normal traffic."""
    queue.put(asyncio.run(attack(host, port, attack_s, slow_conns, drip_s)))


async def normal_traffic(session: ClientSession, url: str, rate: float, seconds: float) -> list[dict[str, Any]]:
    """An open loop: a request every 1/rate seconds, whatever happened to the earlier ones."""
    tasks = []
    started = time.perf_counter()
    n = 0
    while (due := started + n / rate) < started + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": f"normal request {n}"}]}
        tasks.append(asyncio.ensure_future(post_chat(session, url, body, {}, timeout=60.0)))
        n += 1
    outcomes = await asyncio.gather(*tasks)
    return [{"status": o.status, "seconds": (o.ended_at or 0.0) - o.sent_at, "error": o.error} for o in outcomes]


def latency(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["seconds"] for r in rows if r["status"] == 200]
    return {"requests": len(rows), "ok": len(ok), "p50_s": pct(ok, 0.5), "p99_s": pct(ok, 0.99),
            "max_s": max(ok, default=None), "statuses": dict(collections.Counter(str(r["status"]) for r in rows))}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = StreamingFake(args.ms_per_token / 1000.0)
    await backend.start()
    with tempfile.TemporaryDirectory() as workdir:
        triage = TriageProcess(backend.url, Path(workdir))
        await triage.start()
        host, port = triage.url.removeprefix("http://").rsplit(":", 1)
        watch = ProcWatch(triage.pid)
        try:
            async with ClientSession(connector=TCPConnector(limit=0)) as session:
                await normal_traffic(session, triage.url, args.rate, 2.0)  # warm-up, not counted
                watch.start()
                t_base = time.perf_counter()
                baseline = await normal_traffic(session, triage.url, args.rate, args.baseline_s)
                t_attack = time.perf_counter()
                queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
                attacker = multiprocessing.get_context("spawn").Process(
                    target=attacker_process, args=(host, int(port), args.attack_s, args.slow_conns, args.drip_s, queue))
                attacker.start()
                under_attack = await normal_traffic(session, triage.url, args.rate, args.attack_s)
                hostile: list[dict[str, Any]] = await asyncio.to_thread(queue.get, True, args.attack_s + 120)
                attacker.join(30)
                t_end = time.perf_counter()
            # After the normal clients' session too: its kept-alive connections are theirs to close.
            await asyncio.sleep(args.settle_s)
            settled = read_proc(triage.pid)
        finally:
            await watch.stop()
            await triage.stop()
            await backend.stop()
            triage_log = list(triage.output)
    base_samples, attack_samples = watch.between(t_base, t_attack), watch.between(t_attack, t_end)
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in hostile:
        by_kind[row["kind"]][row["outcome"]] += 1
    slowest = {kind: max((r["seconds"] for r in hostile if r["kind"] == kind), default=None) for kind in by_kind}
    return {
        "baseline": latency(baseline), "attack": latency(under_attack),
        "hostile_requests": len(hostile), "hostile_per_s": len(hostile) / args.attack_s,
        "hostile_by_kind": {kind: dict(counts) for kind, counts in by_kind.items()},
        "hostile_slowest_s": slowest,
        "unexpected": [r for r in hostile if not r["expected"]][:50],
        "unexpected_by_kind": dict(collections.Counter(r["kind"] for r in hostile if not r["expected"])),
        "unexpected_count": sum(1 for r in hostile if not r["expected"]),
        "hostile_5xx": sum(1 for r in hostile if r["outcome"].startswith("5")),
        "rss_kib": {"baseline_max": max(s.rss_kib for s in base_samples), "attack_max": max(s.rss_kib for s in attack_samples),
                    "after": settled.rss_kib},
        "fds": {"baseline_max": max(s.fds for s in base_samples), "attack_max": max(s.fds for s in attack_samples),
                "after": settled.fds},
        "threads": {"baseline_max": max(s.threads for s in base_samples),
                    "attack_max": max(s.threads for s in attack_samples), "after": settled.threads},
        "samples": [[round(s.at - t_base, 2), s.rss_kib, s.fds, s.threads] for s in watch.samples],
        "triage_log_tail": triage_log,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="normal requests a second")
    parser.add_argument("--baseline-s", type=float, default=40.0, help="seconds of normal traffic alone")
    parser.add_argument("--attack-s", type=float, default=90.0,
                        help="seconds of normal traffic under attack (longer than body_deadline_s, 60 s, and keep_alive_s, 75 s)")
    parser.add_argument("--slow-conns", type=int, default=50, help="connections of each slow attack")
    parser.add_argument("--drip-s", type=float, default=1.0, help="seconds between two bytes of a slow attack")
    parser.add_argument("--ms-per-token", type=float, default=1.0, help="the fake backend's speed")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="seconds after the attack before the last reading (idle upstream connections go within 2 x 4 s)")
    parser.add_argument("--p50-factor", type=float, default=2.0, help="allowed p50 under attack / baseline p50")
    parser.add_argument("--p99-factor", type=float, default=5.0, help="allowed p99 under attack / baseline p99")
    parser.add_argument("--rss-peak-mib", type=float, default=256.0, help="allowed RSS peak over the baseline's")
    parser.add_argument("--rss-after-mib", type=float, default=64.0, help="allowed RSS after the attack over the baseline's")
    args = parser.parse_args()
    started_utc = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = run_header(started_utc)
    result = asyncio.run(run(args))
    path = save_result("abuse", header, result, args)

    r = result
    print(f"normal traffic {args.rate:g}/s; attack {r['hostile_requests']} hostile requests in {args.attack_s:g} s "
          f"({r['hostile_per_s']:.0f}/s) plus {args.slow_conns} connections of each slow kind\n")
    print("| hostile kind | outcomes | slowest s | all expected |")
    print("|---|---|---|---|")
    for kind, counts in r["hostile_by_kind"].items():
        outcomes = ", ".join(f"{outcome}: {count}" for outcome, count in sorted(counts.items()))
        print(f"| {kind} | {outcomes} | {fmt(r['hostile_slowest_s'][kind], 2)} | "
              f"{'no' if kind in r['unexpected_by_kind'] else 'yes'} |")
    b, a = r["baseline"], r["attack"]
    print("\n| normal traffic | answered 200 | p50 s | p99 s | max s | router RSS max MiB | open fds max | threads max |")
    print("|---|---|---|---|---|---|---|---|")
    for name, lat, key in (("baseline", b, "baseline_max"), ("under attack", a, "attack_max")):
        print(f"| {name} | {lat['ok']}/{lat['requests']} | {fmt(lat['p50_s'], 4)} | {fmt(lat['p99_s'], 4)} "
              f"| {fmt(lat['max_s'], 4)} | {r['rss_kib'][key] / 1024:.1f} | {r['fds'][key]} | {r['threads'][key]} |")
    print(f"| {args.settle_s:g} s after | - | - | - | - | {r['rss_kib']['after'] / 1024:.1f} | {r['fds']['after']} "
          f"| {r['threads']['after']} |")
    p50_ratio = a["p50_s"] / b["p50_s"] if a["p50_s"] and b["p50_s"] else None
    p99_ratio = a["p99_s"] / b["p99_s"] if a["p99_s"] and b["p99_s"] else None
    print(f"\nunder attack / baseline: p50 {fmt(p50_ratio, 2)}x, p99 {fmt(p99_ratio, 2)}x; "
          f"load average at start {header['loadavg_at_start']}, at end {r['loadavg_at_end']}")
    print(f"wrote {path}")
    rss, fds = r["rss_kib"], r["fds"]
    checks = {
        "every hostile request got an expected answer": r["unexpected_count"] == 0,
        "no hostile request got a 5xx": r["hostile_5xx"] == 0,
        "every normal request answered 200": b["ok"] == b["requests"] and a["ok"] == a["requests"],
        f"p50 under attack within {args.p50_factor:g}x": p50_ratio is not None and p50_ratio <= args.p50_factor,
        f"p99 under attack within {args.p99_factor:g}x": p99_ratio is not None and p99_ratio <= args.p99_factor,
        f"RSS peak within baseline + {args.rss_peak_mib:g} MiB":
            rss["attack_max"] <= rss["baseline_max"] + args.rss_peak_mib * 1024,
        f"RSS after within baseline + {args.rss_after_mib:g} MiB":
            rss["after"] <= rss["baseline_max"] + args.rss_after_mib * 1024,
        "open fds back to baseline (+8)": fds["after"] <= fds["baseline_max"] + 8,
    }
    for name, passed in checks.items():
        print(f"  {'pass' if passed else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
