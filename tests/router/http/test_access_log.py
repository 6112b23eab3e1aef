"""The access log, against real sockets: one JSON line per request, refusals included, with the
API key named and never written."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream
from triage_router.router.config import ApiKeyConfig, LogConfig
from triage_router.router.context import Outcome
from triage_router.router.http.access_log import AccessLine, AccessLog, access_line
from triage_router.router.http.server import StartupError

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}
SECRET = "sk-live-7f3a9c1e5b2d"
FIELDS = list(AccessLine.__struct_fields__)


def _config(upstream: FakeUpstream, log: Path | None, extra: str = "") -> str:
    text = f'[[backends]]\nname = "{upstream.name}"\nurl = "{upstream.url}"\nmodels = ["smol"]\n{extra}'
    return text + (f'\n[log]\naccess_file = "{log}"\n' if log is not None else "")


def _lines(path: Path, count: int) -> list[dict]:
    """The log's lines once there are `count`: a line is written just after the answer's last byte."""
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= count or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert text.endswith("\n") and text.count("\n") == count, text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(list(line) == FIELDS for line in lines)
    return lines


def test_a_plain_and_a_streamed_answer_get_one_line_each(upstream: FakeUpstream, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    with running_proxy(_config(upstream, log)) as proxy:
        plain = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-priority": "3"})
        streamed = httpx.post(f"{proxy.url}/v1/chat/completions?x=1", json={**CHAT, "stream": True})
        plain_line, stream_line = _lines(log, 2)
    assert plain.status_code == streamed.status_code == 200
    assert plain_line["request_id"] == plain.headers["x-request-id"]
    assert stream_line["request_id"] == streamed.headers["x-request-id"]
    for line in (plain_line, stream_line):
        assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
        assert (line["status"], line["error"], line["backend"], line["model"]) == (200, None, "alpha", "smol")
        assert (line["key"], line["tenant"], line["client_disconnected"]) == (None, None, False)
        # The fake's usage: 7 prompt tokens; 3 completion tokens, one per streamed chunk.
        assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 3)
        assert 0 <= line["queue_s"] <= line["ttft_s"] <= line["total_s"] < 10
        assert time.time() - 60 < time.mktime(time.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert (plain_line["stream"], plain_line["priority"], plain_line["priority_source"]) == (False, 3, "header")
    assert (stream_line["stream"], stream_line["priority"], stream_line["priority_source"]) == (True, 2, "default")


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"{not json", {}, 400, "invalid_request_error"),
        (json.dumps({**CHAT, "model": "nope"}).encode(), {}, 404, "model_not_found"),
        (b"x" * 2048, {}, 413, "request_too_large"),
        (json.dumps(CHAT).encode(), {"x-priority": "9"}, 400, "invalid_priority"),
    ],
)
def test_a_refused_request_gets_a_line(upstream: FakeUpstream, tmp_path: Path, body: bytes,
                                       headers: dict[str, str], status: int, error: str) -> None:
    log = tmp_path / "access.jsonl"
    with running_proxy(_config(upstream, log, "[server]\nmax_body_bytes = 1024\n")) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", content=body,
                              headers={"content-type": "application/json", **headers})
        (line,) = _lines(log, 1)
    assert response.status_code == status
    assert (line["status"], line["error"], line["backend"]) == (status, error, None)
    assert line["request_id"] == response.headers["x-request-id"]
    assert upstream.requests == []


def test_a_rate_limited_key_and_a_failing_backend_get_lines(upstream: FakeUpstream, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    keys = f'[[api_keys]]\nkey = "{SECRET}"\nname = "team-a"\nrequests_per_minute = 1\n'
    with running_proxy(_config(upstream, log, keys)) as proxy:
        auth = {"authorization": f"Bearer {SECRET}"}
        upstream.mode = "status"  # answers 503
        failed = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth)
        limited = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth)
        failed_line, limited_line = _lines(log, 2)
    assert (failed.status_code, limited.status_code) == (503, 429)
    assert (failed_line["status"], failed_line["error"], failed_line["key"]) == (503, "upstream_503", "team-a")
    assert (limited_line["status"], limited_line["error"], limited_line["key"]) == (429, "rate_limit_exceeded", "team-a")


def test_the_key_is_named_never_written(upstream: FakeUpstream, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    keys = (f'[[api_keys]]\nkey = "{SECRET}"\nname = "team-a"\n'
            f'[[api_keys]]\nkey_sha256 = "{hashlib.sha256(b"other-key").hexdigest()}"\n')
    with running_proxy(_config(upstream, log, keys)) as proxy:
        ok = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {SECRET}"})
        unnamed = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"x-api-key": "other-key"})
        wrong = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {SECRET}x"})
        lines = _lines(log, 3)
    assert (ok.status_code, unnamed.status_code, wrong.status_code) == (200, 200, 401)
    assert [(line["key"], line["tenant"], line["status"]) for line in lines] == [
        ("team-a", "team-a", 200),
        ("key-" + hashlib.sha256(b"other-key").hexdigest()[:12], "key-" + hashlib.sha256(b"other-key").hexdigest()[:12],
         200),
        (None, None, 401),
    ]
    text = log.read_text()
    for part in (SECRET, SECRET[3:], SECRET[-8:], "other-key"):
        assert part not in text


def test_a_client_that_leaves_is_logged_as_gone(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.mode = "hang"
    log = tmp_path / "access.jsonl"
    with running_proxy(_config(upstream, log)) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        body = json.dumps(CHAT).encode()
        with socket.create_connection((host, int(port))) as client:
            client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            assert upstream.received.wait(10)
        (line,) = _lines(log, 1)
    assert (line["status"], line["client_disconnected"], line["backend"]) == (499, True, None)


def test_stdout_by_default_and_nothing_when_turned_off(upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]) -> None:
    with running_proxy(_config(upstream, None)) as proxy:
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
        httpx.get(f"{proxy.url}/v1/chat/completions")  # 405: refused by method, still a line
    out = capfd.readouterr().out.splitlines()
    assert [(json.loads(line)["request_id"] == response.headers["x-request-id"], json.loads(line)["status"])
            for line in out] == [(True, 200), (False, 405)]
    with running_proxy(_config(upstream, None, "[log]\naccess = false\n")) as proxy:
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).status_code == 200
    assert capfd.readouterr().out == ""


def test_an_unwritable_file_stops_the_start() -> None:
    with pytest.raises(StartupError, match="log.access_file: cannot open '/nonexistent/dir/access.log'"):
        AccessLog(LogConfig(access_file="/nonexistent/dir/access.log"))


def test_a_line_before_the_request_was_read_names_what_it_knows() -> None:
    key = ApiKeyConfig(key_sha256="ab" * 32)
    line = access_line({"method": "POST", "path": "/v1/embeddings"}, "r-1", 100.0, 100.25, Outcome(status=429),
                       None, key)
    assert (line.key, line.tenant, line.model, line.priority, line.status, line.total_s) == (
        "key-abababababab", "key-abababababab", None, None, 429, 0.25)
