"""`triage serve --workers 2` as a user runs it: real processes on one real port.

Which worker answers a connection is the kernel's choice; /status names the worker that answered,
so a client whose one kept-alive connection reached worker N keeps talking to worker N.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream
from triage_router.router.buffered_metrics import FLUSH_EVERY_S

ROOT = Path(__file__).parents[2]
TRIAGE = [sys.executable, "-m", "triage_router.router.cli"]
# `triage` with `launch = true` running tests/fakes/launched_engine.py instead of our engine.
TRIAGE_WITH_FAKE_ENGINE = [sys.executable, "-c", (
    "import sys\n"
    "from triage_router.router.cli import engine_launcher\n"
    "engine_launcher.ENGINE_MODULE = 'tests.fakes.launched_engine'\n"
    "engine_launcher.require_engine_extra = lambda who: None\n"
    "from triage_router.router.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")]


@dataclass
class Router:
    process: subprocess.Popen[str]
    url: str
    pids: list[int]


@contextmanager
def _serving(command: list[str], config: Path, tmp_path: Path, flag: list[str]) -> Iterator[Router]:
    """`triage serve` with two workers, asked for by `flag` or else by the config."""
    # The workers' metrics folder is made under TMPDIR: the test sees it go.
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen([*command, "serve", "--config", str(config), "--port", "0", *flag],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline()]
        while lines[-1] and not lines[-1].startswith("Triage listening on "):
            lines.append(process.stdout.readline())
        assert lines[-1].startswith("Triage listening on "), "".join(lines) + (process.stderr.read() if process.stderr else "")
        url = lines[-1].strip().removeprefix("Triage listening on ")
        pids = [int(pid) for pid in re.findall(r"\d+", process.stdout.readline().split("pids", 1)[1])]
        yield Router(process, url, pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _pinned(url: str) -> dict[int, httpx.Client]:
    """A client per worker, each on one kept-alive connection that reached that worker."""
    pinned: dict[int, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        index = client.get("/status").json()["worker"]["index"]
        if index in pinned:
            client.close()
        else:
            pinned[index] = client
        if len(pinned) == 2:
            return pinned
    raise AssertionError(f"200 connections all reached worker {list(pinned)}")


def _chat(client: httpx.Client, model: str) -> None:
    answer = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of metric `name` in a Prometheus text page."""
    return [(m.group(1) or "", float(m.group(2)))
            for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)]


def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_workers_share_the_port_metrics_the_state_file_and_one_engine(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    engine_port = _free_port()
    starts, state = tmp_path / "engine-starts", tmp_path / "length.json"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[backends]]\nname = "fake"\nurl = "{upstream.url}"\nmodels = ["*"]\n'
        f'[[backends]]\nname = "engine"\nurl = "http://127.0.0.1:{engine_port}"\nkind = "engine"\nlaunch = true\n'
        f'launch_args = ["--record", "{starts}"]\n'
        f'[length]\nstate_file = "{state}"\nsave_interval_s = 0.1\n'
        '[log]\naccess = false\n')
    with _serving(TRIAGE_WITH_FAKE_ENGINE, config, tmp_path, ["--workers", "2"]) as router:
        parent = router.process.pid
        family = _descendants(parent)
        assert set(router.pids) <= family
        # The engine was started once, by the parent, before the workers: no worker is its parent.
        engine_pids = [int(line) for line in starts.read_text().split()]
        assert len(engine_pids) == 1 and engine_pids[0] in family
        assert httpx.get(f"http://127.0.0.1:{engine_port}/health").status_code == 200
        assert all(_ppid(pid) == parent for pid in [*router.pids, *engine_pids])
        metrics_dirs = list((tmp_path / "tmp").iterdir())
        assert [d.name.startswith("triage-metrics-") for d in metrics_dirs] == [True]

        workers = _pinned(router.url)
        assert sorted(c.get("/status").json()["worker"]["pid"] for c in workers.values()) == sorted(router.pids)
        # Each worker learns lengths from its own answers; only worker 0 writes them down.
        for _ in range(3):
            _chat(workers[0], "only-worker-0")
        for _ in range(5):
            _chat(workers[1], "only-worker-1")
        # Each worker hands its counts over every FLUSH_EVERY_S: after that, either shows them all.
        time.sleep(2 * FLUSH_EVERY_S)
        for client in workers.values():
            page = client.get("/metrics").text
            # Counted by whichever worker served them, shown by either.
            assert sum(v for _, v in _samples(page, "triage_requests_total")) == 8
            by_model = {re.search(r'model="([^"]+)"', labels).group(1): v  # type: ignore[union-attr]
                        for labels, v in _samples(page, "triage_e2e_request_latency_seconds_count")}
            assert by_model == {"only-worker-0": 3, "only-worker-1": 5}
            # A backend's reading is one figure, not one per worker.
            assert sorted(_samples(page, "triage_backend_up")) == [('{backend="engine"}', 1.0), ('{backend="fake"}', 1.0)]
            assert sum(v for _, v in _samples(page, "triage_requests_in_flight")) == 0

        _until(lambda: state.exists() and "only-worker-0" in state.read_text())
        seen = set()
        deadline = time.monotonic() + 1.0  # ten of worker 0's saves
        while time.monotonic() < deadline:
            seen.add(state.read_text())
            time.sleep(0.02)
        assert not any("only-worker-1" in text for text in seen)
        for client in workers.values():
            client.close()

        router.process.send_signal(signal.SIGTERM)
        assert router.process.wait(60) == 0, router.process.stderr.read()  # type: ignore[union-attr]
    # multiprocessing's resource tracker leaves once it reads the end of the parent's pipe.
    _until(lambda: not [pid for pid in family if _alive(pid)], 10)
    assert not list((tmp_path / "tmp").iterdir())
    saved = json.loads(state.read_text())
    models = {key[1] for key, _ in saved["groups"]}
    assert "only-worker-0" in models and "only-worker-1" not in models


def test_sighup_reaches_every_worker_and_a_killed_worker_comes_back(
    tmp_path: Path, upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    config = tmp_path / "config.toml"
    backend = 'name = "{0.name}"\nurl = "{0.url}"\nmodels = ["*"]\n'
    settings = "[server]\nworkers = 2\n[log]\naccess = false\n"
    config.write_text(settings + "[[backends]]\n" + backend.format(upstream))
    with _serving(TRIAGE, config, tmp_path, []) as router:
        workers = _pinned(router.url)
        for index in (0, 1):
            _chat(workers[index], "m")
        config.write_text(settings + "[[backends]]\n" + backend.format(upstream) + "[[backends]]\n"
                          + backend.format(second_upstream))
        router.process.send_signal(signal.SIGHUP)
        for client in workers.values():
            _until(lambda c=client: len(c.get("/status").json()["backends"]) == 2)

        killed = workers[1].get("/status").json()["worker"]["pid"]
        workers[1].close()
        # Killed, a worker loses what it counted since its last hand-over (FLUSH_EVERY_S): wait for one.
        time.sleep(2 * FLUSH_EVERY_S)
        subprocess.run(["kill", "-KILL", str(killed)], check=True)
        fresh: dict[str, object] = {}

        def restarted() -> bool:
            with httpx.Client(base_url=router.url, timeout=30) as client:
                fresh.update(client.get("/status").json())
            return fresh["worker"] == {"index": 1, "of": 2, "pid": fresh["worker"]["pid"]} and \
                fresh["worker"]["pid"] != killed  # type: ignore[index]
        _until(restarted, 60)
        # It started with the config as reloaded, and the dead worker's handed-over count is still there.
        assert [b["name"] for b in fresh["backends"]] == ["alpha", "beta"]  # type: ignore[index]
        page = workers[0].get("/metrics").text
        assert sum(v for _, v in _samples(page, "triage_requests_total")) == 2
        workers[0].close()

        router.process.send_signal(signal.SIGTERM)
        assert router.process.wait(60) == 0
        stderr = router.process.stderr.read()  # type: ignore[union-attr]
    assert f"worker 1 (pid {killed}) exited with status -9 (SIGKILL); restarting it in 1 s" in stderr


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    result = subprocess.run([*TRIAGE, "serve", "--config", str(tmp_path / "none.toml"), "--workers", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--workers: expected a whole number of at least 1, got '0'" in result.stderr


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_port_shared_by_someone_else_is_taken(tmp_path: Path) -> None:
    """Another process listening with SO_REUSEPORT (another Triage with workers) would share
    the port with ours and take part of its connections: refused like any taken port."""
    config = tmp_path / "config.toml"
    config.write_text("")
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run([*TRIAGE, "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
