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
    """A server that, per connection in turn, reads one request and sends the next answer, or
    closes without one (None). Returns it, its URL and a count of connections per answer."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = answers[min(len(connections), len(answers) - 1)]
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


def _backend(url: str) -> Backend:
    return Backend(BackendConfig(name="a", url=url), block_chars=256)


@pytest.mark.anyio
async def test_a_connection_closed_before_any_answer_is_tried_once_more() -> None:
    # What a keep-alive race looks like from here: the request went out, the server shut the
    # connection without reading it. The server never saw it, so sending it again is safe.
    server, url, connections = await _server([None, OK])
    client = UpstreamClient(UpstreamConfig())
    try:
        response = await client.post(_backend(url), "/v1/chat/completions", {}, b"{}")
        assert response.status == 200 and len(connections) == 2
        response.close()
    finally:
        await client.close()
        server.close()


@pytest.mark.anyio
async def test_a_server_that_never_answers_is_tried_twice_at_most() -> None:
    server, url, connections = await _server([None])
    client = UpstreamClient(UpstreamConfig())
    try:
        with pytest.raises(UpstreamUnreachable):
            await client.post(_backend(url), "/v1/chat/completions", {}, b"{}")
        assert len(connections) == 2
    finally:
        await client.close()
        server.close()
