"""Request heads are bounded in time and size, against real sockets (router/http/server.py).

uvicorn alone sets no timer before a request's headers are complete and keeps every header byte
it is sent: bench/reliability/abuse.py held 50 connections dripping a header byte a second, and
50 that sent nothing, open for its whole 90 s attack, and a 32 MiB header grew the router by
65 MiB before its 431.
"""

from __future__ import annotations

import socket
import time

import httpx

from tests.fakes.proxy import running_proxy

CONFIG = '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\n[server]\n'


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(client: socket.socket, limit_s: float = 5.0) -> bytes:
    client.settimeout(limit_s)
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def test_a_head_dripped_a_byte_at_a_time_gets_408_and_the_connection_is_closed() -> None:
    with running_proxy(CONFIG + "header_timeout_s = 0.5\n") as proxy, _connect(proxy.url) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        client.settimeout(0.1)
        started = time.monotonic()
        answer = b""
        while not answer and time.monotonic() - started < 5.0:
            client.sendall(b"x")  # a header that never ends, a byte every 0.1 s
            try:
                answer = client.recv(65536)
            except TimeoutError:
                pass
        waited = time.monotonic() - started
        answer += _read_until_closed(client)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in answer
    assert 0.4 < waited < 3.0


def test_an_endless_header_gets_431_while_it_arrives() -> None:
    with running_proxy(CONFIG) as proxy, _connect(proxy.url) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-endless: ")
        try:
            for _ in range(128):  # 8 MiB, and never the end of the header
                client.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_until_closed(client)
    # The header never ended: only a refusal while it arrived can answer it.
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"code":"request_header_fields_too_large"' in answer


def test_a_connection_that_never_sends_is_closed_after_the_keep_alive_timeout() -> None:
    with running_proxy(CONFIG + "keep_alive_s = 0.5\n") as proxy, _connect(proxy.url) as client:
        started = time.monotonic()
        assert _read_until_closed(client) == b""
        assert time.monotonic() - started < 3.0


def test_honest_clients_are_untouched_by_the_head_timer() -> None:
    # The timer runs from a request's first byte to its last header, not between requests.
    with running_proxy(CONFIG + "header_timeout_s = 0.3\nkeep_alive_s = 10\n") as proxy:
        with httpx.Client(base_url=proxy.url) as client:
            first = client.get("/health")
            time.sleep(0.6)  # idle on the kept-alive connection, twice the head timeout
            second = client.get("/health")
        with _connect(proxy.url) as raw:
            raw.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            time.sleep(0.1)  # a head in two parts, within the timeout
            raw.sendall(b"connection: close\r\n\r\n")
            answer = _read_until_closed(raw)
    assert first.status_code == second.status_code == 200
    assert answer.startswith(b"HTTP/1.1 200 ")
