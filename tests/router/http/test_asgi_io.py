"""The ASGI plumbing: a client that leaves is noticed through our server's ClientLink, or by
a task on `receive` under any other ASGI server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from triage_router.router.errors import BodyTooSlow
from triage_router.router.http.asgi_io import CLIENT_LINK, ClientLink, DisconnectWatch, read_body


@pytest.mark.anyio
async def test_a_lost_link_cancels_the_watched_request_and_a_stopped_watch_stays_quiet() -> None:
    link = ClientLink()
    watches: list[DisconnectWatch] = []

    async def request(stop_first: bool) -> None:
        watch = DisconnectWatch({CLIENT_LINK: link}, receive=_never)
        watches.append(watch)
        if stop_first:
            watch.stop()
        await asyncio.sleep(10)

    stopped = asyncio.ensure_future(request(stop_first=True))
    watched = asyncio.ensure_future(request(stop_first=False))
    await asyncio.sleep(0)
    link.lost()
    with pytest.raises(asyncio.CancelledError):
        await watched
    assert watches[1].happened and not watches[0].happened
    assert not stopped.done()
    stopped.cancel()


@pytest.mark.anyio
async def test_a_client_gone_before_the_watch_began_stops_the_request_at_its_next_await() -> None:
    link = ClientLink()
    link.lost()

    async def request() -> None:
        watch = DisconnectWatch({CLIENT_LINK: link}, receive=_never)
        assert watch.happened
        await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(request())


@pytest.mark.anyio
async def test_without_a_link_a_task_waits_on_receive_for_the_disconnect() -> None:
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def request() -> DisconnectWatch:
        watch = DisconnectWatch({}, receive=messages.get)
        await asyncio.sleep(10)
        return watch

    task = asyncio.ensure_future(request())
    await messages.put({"type": "http.request", "body": b"", "more_body": False})
    await messages.put({"type": "http.disconnect"})
    with pytest.raises(asyncio.CancelledError):
        await task


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError


@pytest.mark.anyio
async def test_a_body_already_whole_is_read_without_a_deadline_and_a_late_one_still_has_one() -> None:
    async def whole() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def never() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    link = ClientLink()
    link.request_complete = True
    # A zero deadline would fail any read that arms one.
    assert await read_body(whole, 1024, deadline_s=0.0, link=link) == b"{}"
    link.request_complete = False
    with pytest.raises(BodyTooSlow):
        await read_body(never, 1024, deadline_s=0.01, link=link)
