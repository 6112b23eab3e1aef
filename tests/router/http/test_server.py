"""Our HTTP/1.1 server (router/http/server.py, connection.py, request_cycle.py) on real sockets,
in front of small ASGI apps: keep-alive, pipelining, framing, failures, lifespan."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from triage_router.router.http.asgi_io import read_body
from triage_router.router.http.server import Server, bind_socket


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the method, path and body it was sent; /stream answers in two chunks,
    /fail raises before answering."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await read_body(receive, 1 << 20)
    if scope["path"] == "/fail":
        raise RuntimeError("the app broke")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
        return
    answer = f"{scope['method']} {scope['path']} ".encode() + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextmanager
def _serving(app: Any = echo) -> Iterator[tuple[Server, int]]:
    sock = bind_socket("127.0.0.1", 0)
    ready = threading.Event()
    server = Server(app, grace_s=2.0, on_ready=ready.set, keep_alive_s=5.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _read_answers(client: socket.socket, count: int) -> bytes:
    """Everything the server sends until `count` answers have ended (or it closes)."""
    data = b""
    client.settimeout(5)
    while data.count(b"HTTP/1.1 ") < count or not _last_answer_whole(data):
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _last_answer_whole(data: bytes) -> bool:
    last = data[data.rindex(b"HTTP/1.1 "):]
    head, _, body = last.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head:
        return body.endswith(b"0\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")), 0)
    return len(body) >= length


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    with _serving() as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none")
        assert _read_answers(client, 1).endswith(b"POST /a one")
        # Two at once: the second waits for the first's answer.
        client.sendall(b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\ntwo"
                       b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n")
        answers = _read_answers(client, 2)
        assert answers.index(b"POST /b two") < answers.index(b"GET /c ")


def test_an_answer_without_a_length_is_chunked_and_head_gets_no_body() -> None:
    with _serving() as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = _read_answers(client, 1)
        assert b"transfer-encoding: chunked" in answer
        assert answer.endswith(b"\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n")
        client.sendall(b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n")
        client.sendall(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        # HEAD's answer has the length GET's would have, and no body: the next answer follows it.
        answers = _read_answers(client, 2)
        assert answers.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nHTTP/1.1 ")
        assert answers.endswith(b"GET /b ")


def test_a_body_sent_in_pieces_and_one_behind_expect_continue_arrive_whole() -> None:
    with _serving() as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        client.sendall(b"3\r\nabc\r\n")
        client.sendall(b"2\r\nde\r\n0\r\n\r\n")
        assert _read_answers(client, 1).endswith(b"POST /a abcde")
        client.sendall(b"POST /a HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        client.settimeout(5)
        assert client.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(b"ok")
        assert _read_answers(client, 1).endswith(b"POST /a ok")


def test_an_app_that_fails_answers_500_and_the_connection_closes() -> None:
    with _serving() as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /fail HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = _read_answers(client, 1)
        assert answer.startswith(b"HTTP/1.1 500 ") and b"connection: close" in answer
        assert client.recv(1024) == b""


def test_http_1_0_closes_after_its_answer_and_garbage_gets_400() -> None:
    with _serving() as (_, port):
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /a HTTP/1.0\r\n\r\n")
            answer = _read_answers(client, 1)
            assert b"connection: close" in answer and client.recv(1024) == b""
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"\x00\x01 not http\r\n\r\n")
            client.settimeout(5)
            assert client.recv(1024).startswith(b"HTTP/1.1 400 ")


def test_an_app_whose_startup_fails_is_not_served() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sock = bind_socket("127.0.0.1", 0)
    server = Server(broken, grace_s=1.0, on_ready=lambda: pytest.fail("served a failed app"))
    server.run([sock])
    sock.close()
    assert not server.started


def test_a_client_that_reads_slowly_holds_the_app_back_and_still_gets_everything() -> None:
    piece, pieces, sent = b"x" * 65536, 128, []

    async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await echo(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(piece) * pieces).encode())]})
        for index in range(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": index < pieces - 1})
            sent.append(index)

    with _serving(big) as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.5)
        # 8 MiB written to a client that reads nothing: the app waits on the full buffers.
        assert len(sent) < pieces
        received = b""
        client.settimeout(5)
        while len(received) < len(piece) * pieces:
            chunk = client.recv(1 << 20)
            assert chunk
            received += chunk.split(b"\r\n\r\n", 1)[1] if not received and b"\r\n\r\n" in chunk else chunk
        deadline = time.monotonic() + 2
        while len(sent) < pieces and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sent) == pieces


def test_an_app_without_a_lifespan_is_served_all_the_same() -> None:
    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http here")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with _serving(plain) as (_, port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        client.settimeout(5)
        assert client.recv(1024) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_a_body_refused_before_it_was_read_is_drained_and_the_connection_serves_on() -> None:
    """The app answers (a 413, say) without reading a large body: the rest is read and dropped,
    the connection goes on, and a client that then leaves is noticed (no connection held)."""

    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await echo(scope, receive, send)
            return
        if scope["path"] == "/big":
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await echo(scope, receive, send)

    with _serving(refuse) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as client:
            size = 4 << 20
            client.sendall(b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
            client.sendall(b"x" * (256 << 10))  # past the 64 KiB the server holds before it stops reading
            assert _read_answers(client, 1).startswith(b"HTTP/1.1 413 ")
            client.sendall(b"x" * (size - (256 << 10)))
            client.sendall(b"POST /next HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
            assert _read_answers(client, 1).endswith(b"POST /next ok")
        deadline = time.monotonic() + 5
        while server.state.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.state.connections
