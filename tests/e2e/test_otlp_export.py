"""A `triage serve` process with OTEL_* set exports its spans over OTLP/HTTP to a collector, and
the backend receives a `traceparent` of the same trace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}


class _Collector(BaseHTTPRequestHandler):
    """What an OpenTelemetry collector's OTLP/HTTP receiver sees: POST /v1/traces, protobuf."""

    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_http_collector_and_the_backend_joins_the_trace(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    config = tmp_path / "config.toml"
    config.write_text(f'[[backends]]\nname = "alpha"\nurl = "{upstream.url}"\nmodels = ["smol"]\n')
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
           "OTEL_SERVICE_NAME": "triage-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    process = subprocess.Popen([sys.executable, "-m", "triage_router.router.cli", "serve", "--config", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        assert line.startswith("Triage listening on "), process.stderr.read() if process.stderr else line
        url = line.removeprefix("Triage listening on ")
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
        deadline = time.monotonic() + 15
        while not any(b"POST /v1/chat/completions" in body for _, _, body in _Collector.received):
            assert time.monotonic() < deadline, "no span reached the collector"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        collector.shutdown()
    path, content_type, body = next(r for r in _Collector.received if b"POST /v1/chat/completions" in r[2])
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"triage-under-test" in body and b"triage.queue" in body
    traceparent = upstream.requests[-1].headers["traceparent"]
    version, trace_id, _, _ = traceparent.split("-")
    assert version == "00" and bytes.fromhex(trace_id) in body  # the backend's parent is in the exported trace
