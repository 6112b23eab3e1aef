"""UpstreamClient against real sockets: a connection the server closes before answering."""

from __future__ import annotations

import asyncio

import pytest

from triage_router.router.config import BackendConfig, UpstreamConfig
from triage_router.router.errors import UpstreamUnreachable
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.upstream import UpstreamClient

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _server(answers: list[bytes | None]) -> tuple[asyncio.Server, str, list[int]]:
    """A keep-alive server that answers the n-th request it reads with `answers[n]`, or closes
    that connection without a word (None). Returns it, its URL, and the request count of each
    connection it accepted."""
    connections: list[int] = []
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        connections.append(0)
        index = len(connections) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                answer = answers[min(served, len(answers) - 1)]
                served += 1
                connections[index] += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


def _backend(url: str) -> Backend:
    return Backend(BackendConfig(name="a", url=url), block_chars=256)


@pytest.mark.anyio
async def test_a_pooled_connection_closed_before_any_answer_is_tried_once_more() -> None:
    # A keep-alive race: the second request went out on the first one's pooled connection just as
    # the server shut it. The server never read it, so sending it again is safe.
    server, url, connections = await _server([OK, None, OK])
    client = UpstreamClient(UpstreamConfig())
    try:
        for _ in range(2):
            response = await client.post(_backend(url), "/v1/chat/completions", {}, b"{}")
            assert response.status == 200
            await response.read()
            response.close()
        assert connections == [2, 1]
    finally:
        await client.close()
        server.close()


@pytest.mark.anyio
async def test_a_new_connection_closed_before_any_answer_is_a_failure_not_retried() -> None:
    # That is a backend failing, not a race: the router's own attempts (other backends) take over.
    server, url, connections = await _server([None])
    client = UpstreamClient(UpstreamConfig())
    try:
        with pytest.raises(UpstreamUnreachable):
            await client.post(_backend(url), "/v1/chat/completions", {}, b"{}")
        assert connections == [1]
    finally:
        await client.close()
        server.close()
