"""A request cycle's writes, as its connection sees them: the head and the body of an answer
leave together; a stream's head does not wait for its first event beyond the loop's turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from triage_router.router.http.request_cycle import RequestCycle


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


class _Connection:
    """What a cycle asks of its connection."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = _RecordingTransport()
        self.write_blocked = None
        self.completed: list[RequestCycle] = []

    def response_complete(self, cycle: RequestCycle) -> None:
        self.completed.append(cycle)

    def resume_reading(self) -> None:
        pass


def _cycle(connection: Any) -> RequestCycle:
    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": []}
    return RequestCycle(connection, scope, keep_alive=True, expect_continue=False)


@pytest.mark.anyio
async def test_a_whole_answer_leaves_in_one_send() -> None:
    connection = _Connection()
    cycle = _cycle(connection)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await cycle.send({"type": "http.response.body", "body": b"{}"})
    await asyncio.sleep(0)
    assert connection.transport.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert connection.completed == [cycle]


@pytest.mark.anyio
async def test_a_stream_head_leaves_at_the_end_of_the_loops_turn_and_its_events_as_they_come() -> None:
    connection = _Connection()
    cycle = _cycle(connection)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    assert connection.transport.sends == []
    await asyncio.sleep(0)
    assert connection.transport.sends == [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"]
    await cycle.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert connection.transport.sends[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]


@pytest.mark.anyio
async def test_a_header_with_a_line_break_is_refused() -> None:
    cycle = _cycle(_Connection())
    with pytest.raises(RuntimeError, match="line break"):
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nx-b: 2")]})
