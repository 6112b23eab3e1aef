"""Starting our own engines as child processes, for the embedded default (`make run`).

The router never imports the engine (it must start fast and stay free of torch): it runs
`python -m triage_router.engine_server` in its own process and talks to it over HTTP like any backend.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from urllib.parse import urlsplit

import httpx

from triage_router.router.config import BackendConfig
from triage_router.router.http.server import StartupError


DISTRIBUTION = "triage-router"
# What `launch = true` runs with `python -m` (tests run a stand-in: tests/fakes/launched_engine.py).
ENGINE_MODULE = "triage_router.engine_server"
ENGINE_EXTRA_INSTALL = "pip install 'triage-router[engine]'"


def missing_engine_packages() -> list[str]:
    """The distributions of our `engine` extra that are not installed.

    Read from our own metadata, so the list stays the extra's, and checked without importing any
    of them: a base install (the sidecar) has no torch, and must say so in one line rather than
    with a traceback from the engine's first import.
    """
    missing = []
    for requirement in metadata.requires(DISTRIBUTION) or []:
        spec, _, marker = requirement.partition(";")
        if not re.search(r"""extra\s*==\s*["']engine["']""", marker):
            continue
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        assert name is not None, requirement
        try:
            metadata.distribution(name.group(0))
        except metadata.PackageNotFoundError:
            missing.append(name.group(0))
    return missing


def require_engine_extra(who: str) -> None:
    """Stop with one line naming the extra to install, if our engine could not start here."""
    missing = missing_engine_packages()
    if missing:
        raise StartupError(f"{who} needs the engine extra, which is not installed "
                           f"(missing: {', '.join(missing)}): {ENGINE_EXTRA_INSTALL}")


def _kv_events_args(backend: BackendConfig) -> list[str]:
    """A launched engine publishes the KV events its backend subscribes to, on the ports the
    config names, unless launch_args already say how. Like vLLM, the engine binds only a
    wildcard address (it connects to any other), so tcp://host:port becomes tcp://*:port."""
    events = backend.events
    if events is None or "--kv-events-config" in backend.launch_args:
        return []
    config = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": _bound(events.endpoint),
              "topic": events.topic}
    if events.replay_endpoint:
        config["replay_endpoint"] = _bound(events.replay_endpoint)
    return ["--kv-events-config", json.dumps(config)]


def _bound(endpoint: str) -> str:
    return re.sub(r"^tcp://[^/]+:(\d+)$", r"tcp://*:\1", endpoint)


class EngineProcess:
    def __init__(self, backend: BackendConfig) -> None:
        self.backend = backend
        address = urlsplit(backend.url)
        self.host = address.hostname or "127.0.0.1"
        self.port = address.port or 80
        self.command = [sys.executable, "-m", ENGINE_MODULE, "--host", self.host, "--port", str(self.port),
                        *backend.launch_args, *_kv_events_args(backend)]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        require_engine_extra(f"backend {self.backend.name!r} (launch = true) runs our engine, which")
        # Its output goes to our terminal: model conversion and loading report their progress.
        self._process = subprocess.Popen(self.command)

    def wait_ready(self, on_waiting: Callable[[float], None], poll_s: float = 0.5) -> None:
        """Block until the engine answers /health; fail if it exits or takes too long."""
        assert self._process is not None
        started = time.monotonic()
        last_note = started
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise StartupError(f"engine {self.backend.name} exited with status {code} while starting")
                try:
                    if client.get(f"{self.backend.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                now = time.monotonic()
                if now - started > self.backend.launch_timeout_s:
                    self.stop()
                    raise StartupError(f"engine {self.backend.name} was not ready after {self.backend.launch_timeout_s:g} s")
                if now - last_note >= 10:
                    on_waiting(now - started)
                    last_note = now
                time.sleep(poll_s)

    def stop(self, grace_s: float = 10.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
