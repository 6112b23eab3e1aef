"""The ASGI plumbing under the proxy: request ids, reading a body within a limit, and noticing a
client that goes away while the upstream still works."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from triage_router.router.errors import BodyTooLarge, BodyTooSlow, HeadersTooLarge

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Request ids: unique across router replicas (random per process) and cheap (a counter):
# uuid4 per request showed up in profiles.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


# The scope key under which our server (router/http/server.py) puts the request's `ClientLink`.
CLIENT_LINK = "triage.client_link"


class ClientLink:
    """The client's connection, as our server sees it: it calls `lost()` the moment the client
    goes away, so a request can learn of it without a task waiting on `receive` for it.

    `request_complete` says that the latest request on the connection has arrived whole, so one
    being read now has too (a pipelined request behind it is only ever later): its body is read
    without arming a deadline."""

    __slots__ = ("gone", "request_complete", "loop", "_listeners")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.gone = False
        # The connection's loop: asyncio.current_task() without it makes a getpid() system call
        # on Python 3.11 (to notice a fork), a microsecond on this machine.
        self.loop = loop
        self.request_complete = False
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def forget(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def lost(self) -> None:
        self.gone = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()


class DisconnectWatch:
    """Cancels the request's task when the client goes away, so the upstream call is closed at
    once. Under our server the connection says so (`ClientLink`); under any other ASGI server a
    task waits on `receive` for the disconnect."""

    __slots__ = ("happened", "_request_task", "_link", "_task")

    def __init__(self, scope: dict[str, Any], receive: Receive) -> None:
        self.happened = False
        self._link: ClientLink | None = scope.get(CLIENT_LINK)
        self._request_task = asyncio.current_task(self._link.loop if self._link is not None else None)
        self._task: asyncio.Task[None] | None = None
        if self._link is None:
            self._task = asyncio.ensure_future(self._watch(receive))
        elif self._link.gone:
            # It left before the watch began: the request stops at its next await.
            self._left()
        else:
            self._link.listen(self._left)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left()

    def _left(self) -> None:
        self.happened = True
        if self._request_task is not None:
            self._request_task.cancel()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        elif self._link is not None:
            self._link.forget(self._left)


async def read_body(receive: Receive, limit: int, deadline_s: float = 60.0, link: ClientLink | None = None) -> bytes:
    """The whole body, within `limit` bytes and `deadline_s` seconds. With the connection's
    `link` saying that it has all arrived, no deadline is needed (nor paid for: 5-10 µs)."""
    if link is not None and link.request_complete:
        return await _read_body(receive, limit)
    try:
        async with asyncio.timeout(deadline_s):
            return await _read_body(receive, limit)
    except TimeoutError:
        raise BodyTooSlow(f"the request body did not arrive within {deadline_s:g} s") from None


def check_headers(headers: list[tuple[bytes, bytes]], max_count: int, max_bytes: int) -> None:
    if len(headers) > max_count:
        raise HeadersTooLarge(f"{len(headers)} request headers; at most {max_count} are accepted")
    if (size := sum(len(name) + len(value) for name, value in headers)) > max_bytes:
        raise HeadersTooLarge(f"{size} bytes of request headers; at most {max_bytes} are accepted")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
