"""GET /status through a live router in front of fake upstreams: the queues per priority, the
backend table as read from each backend, and the last decisions with their reasons."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}
# A vLLM that reports load, KV usage and prefix-cache counters: 50 of 200 queried tokens hit.
READING = (
    'vllm:num_requests_running{model_name="smol"} 3.0\n'
    'vllm:num_requests_waiting{model_name="smol"} 1.0\n'
    'vllm:kv_cache_usage_perc{model_name="smol"} 0.42\n'
    'vllm:prefix_cache_queries_total{model_name="smol"} 200.0\n'
    'vllm:prefix_cache_hits_total{model_name="smol"} 50.0\n'
)


@pytest.fixture
def alpha() -> Iterator[FakeUpstream]:
    server = FakeUpstream("alpha").start()
    yield server
    server.release.set()
    server.stop()


@pytest.fixture
def beta() -> Iterator[FakeUpstream]:
    # A /metrics, but not vLLM's: nothing in it says how loaded the server is.
    server = FakeUpstream("beta", metrics_text="process_cpu_seconds_total 1.5\n").start()
    yield server
    server.stop()


def backend(upstream: FakeUpstream, extra: str = "") -> str:
    return f'[[backends]]\nname = "{upstream.name}"\nurl = "{upstream.url}"\nmodels = ["smol"]\n{extra}'


def status_when(url: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0) -> dict[str, Any]:
    """/status as soon as it satisfies `condition` (the router's state moves on its own loop)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(f"{url}/status").json()
        if condition(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in status["backends"]}


def by_request(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["request_id"]: d for d in status["decisions"]}


def test_placements_and_the_backend_table(alpha: FakeUpstream, beta: FakeUpstream) -> None:
    alpha.metrics_text = READING
    config = backend(alpha) + backend(beta)
    with running_proxy(config) as proxy:
        for i in range(4):
            answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                                headers={"x-request-id": f"r{i}", "x-priority": str(2 + i % 3)})
            assert answer.status_code == 200
        # Readings that show a queue for over a second teach the concurrency: 3 running.
        status = status_when(proxy.url, lambda s: by_name(s)["alpha"]["concurrency"]["learned"] is not None
                             and by_name(s)["beta"]["reading_age_s"] is not None)
        response = httpx.get(f"{proxy.url}/status")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"

    assert [(p["priority"], p["waiting"], p["in_flight"]) for p in status["priorities"]] == [
        (p, 0, 0) for p in range(5)]
    a, b = by_name(status)["alpha"], by_name(status)["beta"]
    assert a["healthy"] and a["answered"] and b["healthy"]
    assert (a["running"], a["waiting"], a["kv_usage"], a["prefix_hit_rate"]) == (3.0, 1.0, 0.42, 0.25)
    assert a["concurrency"] == {"learned": 3, "slow_start_probe": None, "configured_limits": {}}
    assert 0 <= a["reading_age_s"] < 5
    # Read, but no load in it: unknown, not zero, and no slow start (nothing would show its queue).
    assert (b["running"], b["waiting"], b["kv_usage"], b["prefix_hit_rate"]) == (None, None, None, "unknown")
    assert b["concurrency"] == {"learned": None, "slow_start_probe": None, "configured_limits": {}}
    assert a["in_flight"] == b["in_flight"] == 0

    decisions = by_request(status)
    assert [d["request_id"] for d in status["decisions"]] == ["r3", "r2", "r1", "r0"]  # newest first
    total = sum(len(u.requests) for u in (alpha, beta))
    assert total == 4
    for i in range(4):
        d = decisions[f"r{i}"]
        upstream = alpha if d["backend"] == "alpha" else beta
        assert any(r.headers.get("x-request-id") == f"r{i}" for r in upstream.requests)
        assert d["outcome"] == "placed" and d["model"] == "smol" and not d["retry"]
        assert (d["priority"], d["priority_source"]) == (2 + i % 3, "header")
        # The dispatcher's own explanation: the policy, its reason, every candidate's score.
        assert d["reason"].startswith("cache-affinity: ") and "alpha=" in d["reason"] and "beta=" in d["reason"]
        assert 0 <= d["queue_wait_s"] < 1 and abs(d["at"] - time.time()) < 30


def test_a_waiting_request_a_refusal_and_a_shed_one(alpha: FakeUpstream) -> None:
    alpha.mode = "stream_hold"
    config = backend(alpha, "max_load = 1\n") + "[admission]\nmax_queued = 1\n"
    done: dict[str, httpx.Response] = {}

    def send(request_id: str, priority: int | None) -> threading.Thread:
        headers = {"x-request-id": request_id} | ({"x-priority": str(priority)} if priority is not None else {})
        thread = threading.Thread(target=lambda: done.setdefault(request_id, httpx.post(
            f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)))
        thread.start()
        return thread

    with running_proxy(config) as proxy:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"x-request-id": "holder"}) as holder:
            held = holder.iter_lines()  # kept: a dropped generator closes the stream
            assert next(held).startswith("data: ")
            waiter = send("waiter", 3)
            status = status_when(proxy.url, lambda s: s["priorities"][3]["waiting"] == 1
                                 and by_name(s)["alpha"]["concurrency"]["slow_start_probe"] is not None)
            assert [(p["waiting"], p["in_flight"]) for p in status["priorities"]] == [
                (0, 0), (0, 0), (0, 1), (1, 0), (0, 0)]
            assert by_name(status)["alpha"]["in_flight"] == 1
            assert by_name(status)["alpha"]["in_flight_by_priority"] == [0, 0, 1, 0, 0]
            # Its readings show no queue: still in slow start, though max_load is what limits it.
            assert by_name(status)["alpha"]["concurrency"] == {
                "learned": None, "slow_start_probe": 8, "configured_limits": {"max_load": 1}}

            # The queue holds one: a priority-4 arrival has nothing less urgent to displace.
            refused = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                                 headers={"x-request-id": "refused", "x-priority": "4"})
            assert refused.status_code == 429
            # A priority-2 arrival sheds the waiting priority-3 request and waits in its place.
            urgent = send("urgent", None)
            waiter.join(10)
            assert done["waiter"].status_code == 503
            status_when(proxy.url, lambda s: s["priorities"][2]["waiting"] == 1)
            alpha.release.set()
            rest = list(held)
        urgent.join(10)
        assert done["urgent"].status_code == 200 and rest
        status = status_when(proxy.url, lambda s: s["priorities"][2]["in_flight"] == 0)

    assert [(d["request_id"], d["outcome"]) for d in status["decisions"]] == [
        ("urgent", "placed"), ("waiter", "refused"), ("refused", "refused"), ("holder", "placed")]
    decisions = by_request(status)
    full = decisions["refused"]
    assert (full["status"], full["code"], full["priority"], full["model"]) == (429, "queue_full", 4, "smol")
    assert full["reason"] == "the admission queue is full" and full["priority_source"] == "header"
    shed = decisions["waiter"]
    assert (shed["status"], shed["code"], shed["priority"]) == (503, "shed_for_more_urgent_work", 3)
    assert shed["reason"] == "shed to make room for more urgent work"
    placed = decisions["urgent"]
    assert placed["backend"] == "alpha" and placed["priority"] == 2
    # It waited for the holder to end: in the queue, not placed at once.
    assert placed["queue_wait_s"] > 0
    assert decisions["holder"]["queue_wait_s"] < placed["queue_wait_s"]
    assert all(p["waiting"] == 0 and p["in_flight"] == 0 for p in status["priorities"])


def test_no_healthy_backend_is_a_refusal_with_its_reason(alpha: FakeUpstream) -> None:
    alpha.mode = "refuse"
    config = backend(alpha) + "[upstream]\nfailure_threshold = 1\nmax_attempts = 1\n"
    with running_proxy(config) as proxy:
        first = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "first"})
        second = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "second"})
        status = httpx.get(f"{proxy.url}/status").json()
    assert (first.status_code, second.status_code) == (502, 503)
    assert not by_name(status)["alpha"]["healthy"]
    decisions = by_request(status)
    # The first was placed (and failed upstream); the second found no healthy backend at all.
    assert decisions["first"]["outcome"] == "placed" and decisions["first"]["backend"] == "alpha"
    assert (decisions["second"]["outcome"], decisions["second"]["status"], decisions["second"]["code"]) == (
        "refused", 503, "no_healthy_backend")


def test_the_dashboard_page_is_served_as_html() -> None:
    with running_proxy('[[backends]]\nname = "x"\nurl = "http://127.0.0.1:9"\nmodels = ["smol"]\n') as proxy:
        page = httpx.get(f"{proxy.url}/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'fetch("status"' in page.content
    # Self-contained: no script, style or image from anywhere else.
    assert b"http://" not in page.content and b"https://" not in page.content and b"src=" not in page.content
