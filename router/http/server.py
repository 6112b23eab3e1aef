"""Running an app: bind first (so a taken port is a clear error), then serve with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from triage_router.router.errors import ApiError, HeadersTooLarge, HeadTooSlow
from triage_router.router.http.asgi_io import CLIENT_LINK, ClientLink

# Bytes a request head may take beyond `max_header_bytes` (which counts names and values only):
# its request line and each header's separators. Past that the head is refused while it arrives.
HEAD_SLACK_BYTES = 64 * 1024
# After refusing a head, what the client still sends is read and dropped this long before the
# connection is closed: closed with unread bytes, it is reset, and the client loses the answer.
REFUSAL_LINGER_S = 1.0


class StartupError(Exception):
    """The server cannot start; the message says why."""


def bind_socket(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A socket bound to `host`:`port`, listening unless told not to. With `reuse_port`, other
    sockets of this user bound the same way share the port, and the kernel spreads new
    connections over those that listen (`triage serve --workers`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    if listen:
        sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM start a graceful drain; unlike uvicorn's, the signal is not re-raised
        afterwards, so a drained shutdown exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


class _CoalescedHead:
    """The connection as one response sees it: the head, which uvicorn writes on its own, is held
    until the body's first bytes, so that a whole answer leaves in one send; or until the end
    of the event loop's turn, for a stream whose first event is not there yet."""

    __slots__ = ("_transport", "_loop", "_held", "_started")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._held = data
            self._loop.call_soon(self._flush)
        elif self._held is not None:
            held, self._held = self._held, None
            self._transport.writelines((held, data))
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds on request heads that it lacks. uvicorn sets
    no timer until a response is sent and keeps every header byte it is given, so a client that
    connects and says nothing, drips a header a byte a second, or sends one endless header held a
    connection (and as much memory as it sent) for ever. Here:

    - a new connection that sends nothing is closed after the keep-alive timeout, as an idle
      kept-alive one is;
    - a request's line and headers must arrive within `head_timeout_s` of its first byte: else
      408 and the connection is closed;
    - they must not pass `max_head_bytes`: else 431 and the connection is closed; the rest is
      read only to be dropped, for REFUSAL_LINGER_S.

    The application still checks the headers' count and bytes precisely (431, docs/configuration.md).

    Two savings on every request, too: each request's scope carries the connection's
    `ClientLink`, which tells the relay the moment its client leaves (no task waiting on
    `receive` for it) and whether its body has all arrived (no deadline to arm for reading it),
    and its response is written through `_CoalescedHead` (head and body in one send).
    """

    head_timeout_s = 30.0
    max_head_bytes = 64 * 1024 + HEAD_SLACK_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._link = ClientLink()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._link.request_complete = False
        self._head_bytes = 0
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a new request's cycle (not an upgrade)
            self.scope[CLIENT_LINK] = self._link  # type: ignore[literal-required]
            cycle.transport = _CoalescedHead(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._link.request_complete = True

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # The head timer still runs after the parser has seen `data`: all of it was head.
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(HeadersTooLarge(f"the request line and headers exceed {self.max_head_bytes} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)
        self._link.lost()

    def _head_timed_out(self) -> None:
        self._refuse(HeadTooSlow(f"the request line and headers did not arrive within {self.head_timeout_s:g} s"))

    def _stop_head_timer(self) -> None:
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
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = error.body()
        self.transport.write(
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)


def make_server(app: Any, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0,
                header_timeout_s: float = 30.0, max_header_bytes: int = 64 * 1024) -> uvicorn.Server:
    protocol = type("GuardedHttpTools", (GuardedHttpTools,),
                    {"head_timeout_s": header_timeout_s, "max_head_bytes": max_header_bytes + HEAD_SLACK_BYTES})
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=protocol,
        lifespan="on",
        log_level="warning",
        access_log=False,
        # Client addresses from X-Forwarded-For are not used; skip the middleware that parses them.
        proxy_headers=False,
        # The upstream's own Date and Server headers are relayed instead.
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=grace_s,
        timeout_keep_alive=keep_alive_s,
    )
    return _Server(config, on_ready)


def serve(
    app: Any, sock: socket.socket, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0,
    header_timeout_s: float = 30.0, max_header_bytes: int = 64 * 1024,
) -> bool:
    """Serve until SIGINT/SIGTERM, then drain in-flight requests. Returns False if startup failed."""
    server = make_server(app, grace_s=grace_s, on_ready=on_ready, keep_alive_s=keep_alive_s,
                         header_timeout_s=header_timeout_s, max_header_bytes=max_header_bytes)
    server.run(sockets=[sock])
    return server.started
