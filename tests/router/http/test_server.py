"""Our uvicorn protocol's connection, as a response cycle sees it: the head and the body of an
answer leave together; a stream's head does not wait for its first event beyond the loop's turn."""

from __future__ import annotations

import asyncio

import pytest

from triage_router.router.http.server import _CoalescedHead


class _RecordingTransport:
    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sends.append(data)

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        self.sends.append(b"".join(pieces))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@pytest.mark.anyio
async def test_a_whole_answer_leaves_in_one_send_and_what_follows_goes_straight_out() -> None:
    transport = _RecordingTransport()
    connection = _CoalescedHead(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    connection.write(b"HTTP/1.1 200 OK\r\n\r\n")
    connection.write(b"{}")
    connection.write(b"more")
    await asyncio.sleep(0)
    assert transport.sends == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"more"]


@pytest.mark.anyio
async def test_a_head_alone_leaves_at_the_end_of_the_loops_turn_and_before_a_close() -> None:
    transport = _RecordingTransport()
    connection = _CoalescedHead(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    connection.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.sends == []
    await asyncio.sleep(0)
    assert transport.sends == [b"HTTP/1.1 200 OK\r\n\r\n"]

    closing = _RecordingTransport()
    connection = _CoalescedHead(closing, asyncio.get_running_loop())  # type: ignore[arg-type]
    connection.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    connection.close()
    assert closing.sends == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and closing.closed
