"""One keep-alive HTTP/1.1 connection to a backend, and the answer read from it.

The data plane needs little of an HTTP client: write a request in one go, parse the answer's
head, hand its body on as it arrives, and put the connection back for the next request. This
does that on an asyncio protocol with httptools (the parser our server uses too) and nothing
else per request: the loop's own timers rather than asyncio.timeout, no header multidicts, no
URL objects. Profiled on the proxy benchmark, aiohttp's client was the largest single cost in
a relayed request (docs/benchmarks.md, "The hot path").
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import httptools

from triage_router.router.errors import UpstreamTimeout, UpstreamUnreachable

# A streamed body buffered past this many bytes (a client reading slower than the backend
# writes) stops reading from the backend until the client catches up.
PAUSE_ABOVE_BYTES = 256 * 1024


class ClosedBeforeAnswer(UpstreamUnreachable):
    """The connection closed before a byte of the answer came: on a pooled connection, the
    server shut it as it was reused and never read the request, so sending again is safe."""


class NoAnswerInTime(UpstreamTimeout):
    """The answer's head did not come by the request's deadline."""


class _AnswerNotAskedFor(Exception):
    """Raised inside the parser to stop it at an answer that follows a whole one unasked."""


class UpstreamResponse:
    """An answer whose head has arrived; its body is read with `read()` or `chunks()`. `close()`
    gives the connection back to its pool once the answer is whole, and closes it otherwise.

    `raw_headers` are the answer's (name, value) pairs, names in lower case, as they came; the
    media type (lower case, without parameters, as aiohttp's `content_type`) is read from them
    as they arrive."""

    __slots__ = ("status", "raw_headers", "content_type", "framed", "_connection", "_chunks", "_buffered",
                 "_complete", "_error", "_waiter", "_closed")

    def __init__(self, connection: UpstreamConnection) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_type = "application/octet-stream"
        # A content-length or transfer-encoding said where the body ends (else: at the close).
        self.framed = False
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamUnreachable | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    async def read(self, idle_timeout_s: float | None = None) -> bytes:
        """The whole body; at most `idle_timeout_s` between two pieces of it."""
        while not self._complete:
            await self._wait(idle_timeout_s)
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self, idle_timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives, what has arrived so far at each step; at most `idle_timeout_s`
        between two pieces."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._connection.resume_reading()
                yield chunk
            elif self._complete:
                return
            else:
                await self._wait(idle_timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.finished(reusable=self._complete and self._error is None)

    # What the connection tells the answer.

    @property
    def complete(self) -> bool:
        return self._complete

    def received(self, piece: bytes) -> int:
        """A piece of the body; returns how many bytes are now waiting to be read."""
        self._chunks.append(piece)
        self._buffered += len(piece)
        self._wake()
        return self._buffered

    def ended(self) -> None:
        self._complete = True
        self._wake()

    def failed(self, error: UpstreamUnreachable) -> None:
        self._error = error
        self._wake()

    async def _wait(self, timeout_s: float | None) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # The loop's own timer, not asyncio.timeout: a stream waits once per event.
        timer = loop.call_later(timeout_s, _stopped_answering, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _stopped_answering(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("the backend stopped answering"))


class UpstreamConnection(asyncio.Protocol):
    """A connection that carries one request at a time (`send`) and returns to `pool` after."""

    def __init__(self, pool: deque[UpstreamConnection], loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        # Kept: asyncio.get_running_loop() makes a getpid() system call on Python 3.11.
        self.loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: UpstreamResponse | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._until_close = False
        self._answered = False
        self.closed = False
        self.idle_since = 0.0

    # The caller's side.

    def send(self, head: bytes, body: bytes, deadline: float) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the future resolves with the answer once its head has arrived, or
        fails with UpstreamTimeout at `deadline` (the loop's clock). A timer of the loop's own
        rather than asyncio.timeout: this is every request's path, and it costs a tenth."""
        assert self._transport is not None and self._response is None
        self._response = UpstreamResponse(self)
        self._head = self.loop.create_future()
        self._head_timer = self.loop.call_at(deadline, self._head_timed_out)
        self._answered = False
        self._transport.writelines((head, body))
        return self._head

    def finished(self, reusable: bool) -> None:
        self._response = self._head = None
        if reusable and not self.closed and self._transport is not None:
            self.resume_reading()
            self.idle_since = self.loop.time()
            self._pool.append(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._stop_head_timer()
        if self._transport is not None:
            self._transport.close()

    # asyncio's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._response is None or self._response.complete:
            # Bytes nobody asked for: the connection is out of step; it must not be reused.
            self.close()
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            if not isinstance(error.__context__, _AnswerNotAskedFor):
                self._fail(UpstreamUnreachable(f"the backend's answer is not valid HTTP: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is None or response.complete:
            return
        if self._head is not None and not self._head.done():
            self._fail(ClosedBeforeAnswer("the backend closed the connection before answering")
                       if not self._answered else UpstreamUnreachable("the backend closed the connection mid-answer"))
        elif self._until_close:
            # No length and no chunks: the body is everything until the server closes.
            response.ended()
        else:
            self._fail(UpstreamUnreachable("the backend broke the connection mid-answer"))

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        if self._response is not None and self._response.complete:
            raise _AnswerNotAskedFor  # a second answer right behind the first: out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        assert response is not None
        name = name.lower()
        response.raw_headers.append((name, value))
        if name == b"content-type":
            response.content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif name == b"content-length" or name == b"transfer-encoding":
            response.framed = True

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None and self._head is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            response.raw_headers.clear()
            response.content_type, response.framed = "application/octet-stream", False
            return
        response.status = status
        self._until_close = not response.framed and status not in (204, 304)
        self._stop_head_timer()
        if not self._head.done():
            self._head.set_result(response)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        if self._response.received(body) > PAUSE_ABOVE_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or response.status == 0:  # the end of an interim answer
            return
        if not self._parser.should_keep_alive():
            self.closed = True  # given back, it is closed instead
        response.ended()

    def _fail(self, error: UpstreamUnreachable) -> None:
        self._stop_head_timer()
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._response is not None:
            self._response.failed(error)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head is not None and not self._head.done():
            self._head.set_exception(NoAnswerInTime("no answer in time"))
            # Closing tells the backend to stop generating; the connection is not reused.
            self.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def resume_reading(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
