"""One request on a connection of Triage's server (router/http/connection.py), as the ASGI app
sees it: `receive` hands over the body as it arrives, `send` writes the answer.

An answer's head is held until its first body bytes, so that a whole answer leaves in one send;
a stream's (no length given), until the end of the event loop's turn at the latest, in case its
first event is not there yet. An app that ends without a body still has its head written.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, Protocol

log = logging.getLogger("triage.server")

_STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_DISCONNECT = {"type": "http.disconnect"}
_SERVER_ERROR = b"Internal Server Error"


class Connection(Protocol):
    """What a cycle needs of its connection (router/http/connection.py)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    # Set while the client reads slower than we write; done when it has caught up.
    write_blocked: asyncio.Future[None] | None

    def resume_reading(self) -> None: ...

    def response_complete(self, cycle: RequestCycle) -> None: ...


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode()


class RequestCycle:
    __slots__ = ("connection", "scope", "keep_alive", "_expect_continue", "_body", "_more_body", "_waiter",
                 "_handed_over", "_disconnected", "_started", "_complete", "_chunked", "_remaining", "_held_head",
                 "_head_only")

    def __init__(self, connection: Connection, scope: dict[str, Any], keep_alive: bool,
                 expect_continue: bool) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self._expect_continue = expect_continue
        self._body = bytearray()
        self._more_body = True
        self._handed_over = False  # the last of the body went to the app
        self._waiter: asyncio.Future[None] | None = None
        self._disconnected = False
        self._started = False
        self._complete = False
        self._chunked = False
        self._remaining = 0  # bytes still owed under a content-length
        self._held_head: bytes | None = None
        self._head_only = scope["method"] == "HEAD"

    # The connection's side

    def body_received(self, body: bytes) -> int:
        """Bytes of body now waiting for the app. Once the answer is sent (a 413 before the body
        was read, say), the rest of the body is read and dropped."""
        if self._complete:
            return 0
        self._body += body
        self._wake()
        return len(self._body)

    def body_complete(self) -> None:
        self._more_body = False
        self._wake()

    def lost(self) -> None:
        self._disconnected = True
        self._wake()

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("the application failed on %s %s", self.scope["method"], self.scope["path"])
            if not self._started:
                await self._send_server_error()
            else:
                self.connection.transport.close()
        except asyncio.CancelledError:  # the server's grace period ran out
            self.connection.transport.close()
            raise
        else:
            if not self._started and not self._disconnected:
                log.error("the application sent no answer to %s %s", self.scope["method"], self.scope["path"])
                await self._send_server_error()
            elif not self._complete and not self._disconnected:
                log.error("the application left its answer to %s %s unfinished", self.scope["method"],
                          self.scope["path"])
                self.connection.transport.close()
        finally:
            self._flush_head()
            self.connection.response_complete(self)

    # ASGI

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if self._expect_continue and not connection.transport.is_closing():
            connection.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._expect_continue = False
        if self._handed_over:
            # The body is all with the app: what is left to tell is the client leaving.
            while not (self._disconnected or self._complete):
                await self._wait()
            return _DISCONNECT
        while not (self._disconnected or self._complete or self._body or not self._more_body):
            connection.resume_reading()
            await self._wait()
        if self._disconnected or self._complete:
            return _DISCONNECT
        body, self._body = bytes(self._body), bytearray()
        self._handed_over = not self._more_body
        connection.resume_reading()
        return {"type": "http.request", "body": body, "more_body": self._more_body}

    async def send(self, message: dict[str, Any]) -> None:
        connection = self.connection
        if connection.write_blocked is not None and not self._disconnected:
            # The client reads slower than we write: wait for it.
            await connection.write_blocked
        if self._disconnected:
            return
        kind = message["type"]
        if not self._started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind}")
            self._start(message["status"], message.get("headers", ()))
        elif not self._complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected http.response.body, got {kind}")
            self._write_body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"{kind} sent after the answer was complete")

    # Internals

    def _start(self, status: int, headers: Any) -> None:
        self._started = True
        self._expect_continue = False
        parts = [_status_line(status)]
        length_given = connection_close = False
        for name, value in headers:
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise RuntimeError("a response header holds a line break")
            name = name.lower()
            if name == b"content-length":
                self._remaining = int(value)
                length_given = True
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self._chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                connection_close = True
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not connection_close:
            parts.append(b"connection: close\r\n")
        if not length_given and not self._chunked and not self._head_only and status not in _NO_BODY_STATUSES:
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self._held_head = b"".join(parts)
        if self._chunked:
            # A stream's first event may be a while: its head goes at the end of this turn at the latest.
            self.connection.loop.call_soon(self._flush_head)

    def _write_body(self, body: bytes, more_body: bool) -> None:
        if self._head_only:
            data = b""
        elif self._chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self._remaining:
                raise RuntimeError("the answer is longer than its content-length")
            self._remaining -= len(body)
            data = body
        transport = self.connection.transport
        if self._held_head is not None:
            head, self._held_head = self._held_head, None
            transport.writelines((head, data))
        elif data:
            transport.write(data)
        if not more_body:
            if self._remaining and not self._chunked and not self._head_only:
                raise RuntimeError("the answer is shorter than its content-length")
            self._complete = True
            self._body = bytearray()  # what the app never read: nobody will
            self._wake()
            if not self.keep_alive:
                transport.close()
            # The next request on the connection may start while this task still does its
            # bookkeeping.
            self.connection.response_complete(self)

    def _flush_head(self) -> None:
        if self._held_head is not None:
            head, self._held_head = self._held_head, None
            if not self.connection.transport.is_closing():
                self.connection.transport.write(head)

    async def _send_server_error(self) -> None:
        self.keep_alive = False
        await self.send({"type": "http.response.start", "status": 500,
                         "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                     (b"content-length", str(len(_SERVER_ERROR)).encode())]})
        await self.send({"type": "http.response.body", "body": _SERVER_ERROR})

    async def _wait(self) -> None:
        if self._waiter is None:
            self._waiter = self.connection.loop.create_future()
        await self._waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
