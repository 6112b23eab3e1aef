"""Reloading the config of a running `triage serve` process: SIGHUP, and the file watch."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream

TRIAGE = [sys.executable, "-m", "triage_router.router.cli"]
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}


def _backend(upstream: FakeUpstream, *, drain: bool = False) -> str:
    return (f'[[backends]]\nname = "{upstream.name}"\nurl = "http://127.0.0.1:{upstream.port}"\nmodels = ["smol"]\n'
            + ("drain = true\n" if drain else ""))


@contextmanager
def _serving(config: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = subprocess.Popen([*TRIAGE, "serve", "--config", str(config), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        assert line.startswith("Triage listening on "), process.stderr.read() if process.stderr else line
        yield line.removeprefix("Triage listening on "), process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _until(check, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sighup_swaps_backends_without_dropping_the_request_in_flight(
    tmp_path: Path, upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(_backend(upstream))
    upstream.mode = "stream_hold"
    with _serving(config) as (url, process):
        held: dict[str, object] = {}

        def stream() -> None:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as r:
                held["status"], held["body"] = r.status_code, r.read()

        client = threading.Thread(target=stream)
        client.start()
        assert upstream.received.wait(10)
        # A broken config is refused, and the running one stays.
        config.write_text(_backend(upstream) + "[[backends]]\nname = 7\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"{url}/health").json()["backends"] == {"alpha": "up"}
        # alpha goes, beta comes: new requests go to beta at once...
        config.write_text(_backend(second_upstream))
        process.send_signal(signal.SIGHUP)
        _until(lambda: httpx.get(f"{url}/health").json()["backends"] == {"beta": "up"})
        answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10)
        # ...while the stream alpha was sending finishes there.
        upstream.release.set()
        client.join(10)
    _, errors = process.communicate(timeout=10)
    assert answer.status_code == 200 and len(second_upstream.requests) == 1
    assert held["status"] == 200 and b"data: [DONE]" in held["body"]  # type: ignore[operator]
    assert "config reload refused" in errors and "config reloaded" in errors
    assert process.returncode == 0


def test_a_drained_backend_takes_no_new_request_and_the_file_watch_applies_it(
    tmp_path: Path, upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    config = tmp_path / "config.toml"
    watch = "[server]\nwatch_config = true\n"
    config.write_text(watch + _backend(upstream) + _backend(second_upstream))
    with _serving(config) as (url, _):
        config.write_text(watch + _backend(upstream, drain=True) + _backend(second_upstream))
        # No signal: the watch notices the file changed (it polls every 2 s).
        _until(lambda: "draining" in _explained(url), timeout_s=15)
        before = len(upstream.requests)
        for _ in range(6):
            assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    assert len(upstream.requests) == before and len(second_upstream.requests) >= 6


def _explained(url: str) -> str:
    """Why a request went where it went, as the debug header says."""
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"x-triage-debug": "1"}, timeout=10)
    return answer.headers.get("x-triage-placement", "")
