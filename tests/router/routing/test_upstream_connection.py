"""The HTTP/1.1 client connection under the data plane, against real sockets: how an answer's
body is framed (length, chunks, until close), streamed, bounded and broken."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from triage_router.router.config import BackendConfig, UpstreamConfig
from triage_router.router.errors import UpstreamTimeout, UpstreamUnreachable
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.upstream import UpstreamClient
from triage_router.router.routing.upstream_connection import PAUSE_ABOVE_BYTES

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    await reader.readexactly(length)
    return head


def _answers(raw: bytes, linger_s: float = 0.0) -> Handler:
    """A server that reads one request, writes `raw`, waits `linger_s` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(linger_s)
        writer.close()

    return handle


@contextlib.asynccontextmanager
async def _client_of(handler: Handler) -> AsyncIterator[tuple[UpstreamClient, Backend]]:
    """A client, and a backend served by `handler` on a real socket; both closed after."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient(UpstreamConfig())
    try:
        yield client, Backend(BackendConfig(name="a", url=f"http://127.0.0.1:{port}"), block_chars=256)
    finally:
        await client.close()
        server.close()


async def _two_requests(handle: Handler) -> list[bytes]:
    """The bodies of two requests in turn, each answer read whole and closed."""
    bodies = []
    async with _client_of(handle) as (client, backend):
        for _ in range(2):
            response = await client.post(backend, "/v1/x", {}, b"{}")
            bodies.append(await response.read(idle_timeout_s=5))
            response.close()
    return bodies


@pytest.mark.anyio
async def test_a_chunked_body_is_handed_on_piece_by_piece_as_it_arrives() -> None:
    second_piece = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n"
                     b"Transfer-Encoding: chunked\r\nX-Served-By: b1\r\n\r\n7\r\ndata: 1\r\n")
        await second_piece.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _client_of(handle) as (client, backend):
        response = await client.post(backend, "/v1/chat/completions", {}, b"{}")
        assert (response.status, response.content_type) == (200, "text/event-stream")
        # Names in lower case, as they are relayed; values as they came.
        assert response.raw_headers == [(b"content-type", b"Text/Event-Stream; charset=utf-8"),
                                         (b"transfer-encoding", b"chunked"), (b"x-served-by", b"b1")]
        pieces = []
        async for chunk in response.chunks(idle_timeout_s=5):
            pieces.append(chunk)
            second_piece.set()  # the second piece is written only once the first was handed on
        assert pieces == [b"data: 1", b"data: 2"]
        response.close()


@pytest.mark.anyio
async def test_a_body_without_length_or_chunks_ends_when_the_server_closes_and_the_connection_is_not_reused() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":")
        await writer.drain()
        writer.write(b" 1}")
        writer.close()

    assert await _two_requests(handle) == [b'{"a": 1}', b'{"a": 1}']
    assert connections == 2


@pytest.mark.anyio
async def test_a_body_cut_short_is_an_upstream_failure() -> None:
    async with _client_of(_answers(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")) as (client, backend):
        response = await client.post(backend, "/v1/x", {}, b"{}")
        with pytest.raises(UpstreamUnreachable, match="mid-answer"):
            await response.read(idle_timeout_s=5)
        response.close()


@pytest.mark.anyio
async def test_silence_within_a_body_past_the_idle_timeout_is_a_timeout() -> None:
    stalls = _answers(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345", linger_s=5)
    async with _client_of(stalls) as (client, backend):
        response = await client.post(backend, "/v1/x", {}, b"{}")
        with pytest.raises(UpstreamTimeout):
            await response.read(idle_timeout_s=0.2)
        response.close()


@pytest.mark.anyio
async def test_no_head_by_the_deadline_is_a_timeout_and_the_connection_is_dropped() -> None:
    closed_by_client = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # returns when the client closes
        closed_by_client.set()

    async with _client_of(silent) as (client, backend):
        backend = Backend(BackendConfig(name="a", url=backend.config.url, first_byte_timeout_s=0.2), block_chars=256)
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout, match="backend a did not answer in time"):
            await asyncio.wait_for(client.post(backend, "/v1/x", {}, b"{}"), 5)
        assert 0.15 < asyncio.get_running_loop().time() - started < 2
        # The backend learns of it at once (it may stop generating), and nothing is pooled.
        await asyncio.wait_for(closed_by_client.wait(), 2)
        assert not client._origins[backend.base_url].idle  # noqa: SLF001


@pytest.mark.anyio
async def test_an_answer_that_is_not_http_is_an_upstream_failure() -> None:
    async with _client_of(_answers(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", linger_s=1)) as (client, backend):
        with pytest.raises(UpstreamUnreachable, match="not valid HTTP"):
            await client.post(backend, "/v1/x", {}, b"{}")


@pytest.mark.anyio
async def test_a_large_stream_read_slowly_arrives_whole_while_reading_from_the_backend_pauses() -> None:
    # Far more than the loopback socket buffers hold, so that a paused reader holds the server up.
    size = 128 * PAUSE_ABOVE_BYTES
    body = bytes(range(256)) * (size // 256)
    sent_all = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for start in range(0, size, 1 << 20):
            writer.write(body[start:start + (1 << 20)])
            await writer.drain()
        sent_all.set()
        await asyncio.sleep(5)
        writer.close()

    async with _client_of(handle) as (client, backend):
        response = await client.post(backend, "/v1/x", {}, b"{}")
        received = bytearray()
        async for chunk in response.chunks(idle_timeout_s=5):
            if not received:
                # The client holds off; were the router still reading, the server would finish.
                await asyncio.sleep(0.5)
                assert not sent_all.is_set()
            received += chunk
        assert bytes(received) == body
        response.close()


@pytest.mark.anyio
async def test_bytes_after_a_whole_answer_put_the_connection_out_of_use() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await _read_request(reader)
                # A broken backend: a second answer nobody asked for, right behind the first.
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
                             b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]")
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    assert await _two_requests(handle) == [b"{}", b"{}"]
    assert connections == 2
