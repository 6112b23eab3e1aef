"""One client connection of Triage's server: HTTP/1.1, parsed by httptools, each request handed to
the ASGI app in its own task (router/http/request_cycle.py), one at a time.

Besides keep-alive and pipelining, it bounds request heads, which many servers leave open: a
client that connects and says nothing, drips a header a byte a second, or sends one endless
header would hold a connection (and the memory it sent) for ever. Here:

- a new connection that sends nothing is closed after the keep-alive timeout, as an idle one is;
- a request's line and headers must arrive within `head_timeout_s` of its first byte: else 408
  and the connection is closed;
- they must not pass `max_head_bytes`: else 431 and the connection is closed; the rest is read
  only to be dropped, for REFUSAL_LINGER_S.

The application still checks the headers' count and bytes precisely (431, docs/configuration.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

from triage_router.router.errors import ApiError, BadRequest, HeadersTooLarge, HeadTooSlow
from triage_router.router.http.asgi_io import CLIENT_LINK, ClientLink
from triage_router.router.http.request_cycle import RequestCycle

log = logging.getLogger("triage.server")

# Bytes a request head may take beyond `max_header_bytes` (which counts names and values only):
# its request line and each header's separators. Past that the head is refused while it arrives.
HEAD_SLACK_BYTES = 64 * 1024
# After refusing a head, what the client still sends is read and dropped this long before the
# connection is closed: closed with unread bytes, it is reset, and the client loses the answer.
REFUSAL_LINGER_S = 1.0
# Request body bytes held for the app before the connection stops reading from the client.
BODY_HIGH_WATER = 64 * 1024


@dataclass
class ServerState:
    """What every connection of one server shares: its app, its limits, and who is open."""

    app: Any
    keep_alive_s: float = 75.0
    head_timeout_s: float = 30.0
    max_head_bytes: int = 64 * 1024 + HEAD_SLACK_BYTES
    connections: set[HttpConnection] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # The lifespan's state, copied into every request's scope as ASGI asks.
    lifespan_state: dict[str, Any] = field(default_factory=dict)


class HttpConnection(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser = httptools.HttpRequestParser(self)
        self.link = ClientLink(self.loop)
        self.cycle: RequestCycle | None = None  # the request being parsed or the last one
        self._queued: deque[RequestCycle] = deque()  # pipelined requests waiting for their turn
        self._running: RequestCycle | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect_continue = False
        self._client: tuple[str, int] | None = None
        self._server: tuple[str, int] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._head_began: float | None = None  # the loop's time at a head's first byte, until it is whole
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False
        self._reading_paused = False
        # Set while the transport's buffer is full: an answer's next write waits for it.
        self.write_blocked: asyncio.Future[None] | None = None

    # Connection events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._client = _address(transport.get_extra_info("peername"))
        self._server = _address(transport.get_extra_info("sockname"))
        self.state.connections.add(self)
        self._idle_timer = self.loop.call_later(self.state.keep_alive_s, self._close_idle)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP
        except httptools.HttpParserError:
            self._refuse(BadRequest("the request is not valid HTTP/1.1"))
            return
        # A head still incomplete after the parser has seen `data`: all of it was head. Its timer
        # is armed only now, so that a request whose head comes in one piece (nearly all) costs none.
        if self._head_began is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.state.max_head_bytes:
                self._refuse(HeadersTooLarge(f"the request line and headers exceed {self.state.max_head_bytes} bytes"))
            elif self._head_timer is None:
                self._head_timer = self.loop.call_at(self._head_began + self.state.head_timeout_s,
                                                     self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._stop_head_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for cycle in (self._running, *self._queued):
            if cycle is not None:
                cycle.lost()
        self._queued.clear()
        self.link.lost()
        if self.write_blocked is not None and not self.write_blocked.done():
            self.write_blocked.set_result(None)

    def pause_writing(self) -> None:
        if self.write_blocked is None:
            self.write_blocked = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_blocked is not None:
            if not self.write_blocked.done():
                self.write_blocked.set_result(None)
            self.write_blocked = None

    # Parser callbacks (httptools)

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect_continue = False
        self.link.request_complete = False
        self._head_bytes = 0
        self._stop_head_timer()
        self._head_began = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing whitespace, which is not part of a field's value (RFC 9110, 5.5).
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        parser = self.parser
        url = httptools.parse_url(self._url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            from urllib.parse import unquote  # rare: most API paths need no unquoting
            path = unquote(path)
        http_version = parser.get_http_version()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": http_version,
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._client,
            "server": self._server,
            "state": self.state.lifespan_state.copy(),
            CLIENT_LINK: self.link,
        }
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        self.cycle = RequestCycle(self, scope, keep_alive, self._expect_continue)
        if self._running is None:
            self._start(self.cycle)
        else:
            # Pipelined behind a response still being sent: its turn comes after; read no further.
            self._queued.append(self.cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.body_received(body) > BODY_HIGH_WATER:
            self.pause_reading()

    def on_message_complete(self) -> None:
        if self.cycle is not None:
            self.cycle.body_complete()
        self.link.request_complete = True

    # What the request cycles call

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self._queued:
            self._reading_paused = False
            self.transport.resume_reading()

    def response_complete(self, cycle: RequestCycle) -> None:
        """`cycle`'s answer is sent: the next pipelined request, or the idle timer."""
        if cycle is not self._running:
            return
        self._running = None
        if self.transport.is_closing():
            return
        if self._queued:
            self._start(self._queued.popleft())
        else:
            self._idle_timer = self.loop.call_later(self.state.keep_alive_s, self._close_idle)
        self.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the answer being sent."""
        if self._running is None:
            self.transport.close()
        else:
            self._running.keep_alive = False
            for cycle in self._queued:
                cycle.keep_alive = False

    # Internals

    def _start(self, cycle: RequestCycle) -> None:
        self._running = cycle
        task = self.loop.create_task(cycle.run(self.state.app))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    def _close_idle(self) -> None:
        if self._running is None and not self.transport.is_closing():
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._refuse(HeadTooSlow(f"the request line and headers did not arrive within {self.state.head_timeout_s:g} s"))

    def _stop_head_timer(self) -> None:
        self._head_began = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, error: ApiError) -> None:
        """Answer `error`, drop what still comes for REFUSAL_LINGER_S, and close. A response
        still being sent on this connection (a pipelined head is late) is cut at once instead:
        no bytes of ours go into the middle of it."""
        self._stop_head_timer()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        if self._running is not None:
            self.transport.close()
            return
        body = error.body()
        self.transport.write(
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None

