"""Running an app: bind first (so a taken port is a clear error), then serve it with our own
HTTP/1.1 connections (router/http/connection.py) on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvloop

from triage_router.router.http.connection import HEAD_SLACK_BYTES, HttpConnection, ServerState

log = logging.getLogger("triage.server")


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


class _Lifespan:
    """The ASGI lifespan protocol, from the server's side: the app's startup and shutdown. An app
    that returns or raises before answering the startup has no lifespan, as with uvicorn's
    `lifespan="auto"`: it is served all the same."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self._app = app
        self._state = state
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self._state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        return await self._exchange("lifespan.startup")

    async def shutdown(self) -> bool:
        return await self._exchange("lifespan.shutdown")

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._inbox.get, self._answers.put)
        except Exception as error:  # noqa: BLE001 - reported through the exchange
            await self._answers.put({"type": "lifespan.ended", "error": repr(error)})
        else:
            await self._answers.put({"type": "lifespan.ended"})

    async def _exchange(self, event: str) -> bool:
        if self._task is None or self._task.done():
            return True  # no lifespan: nothing to start or stop
        await self._inbox.put({"type": event})
        answer = await self._answers.get()
        if answer["type"] == f"{event}.complete":
            return True
        if answer["type"] == "lifespan.ended" and event == "lifespan.startup":
            log.debug("the app has no lifespan (%s)", answer.get("error", "it returned"))
            return True
        log.error("%s failed: %s", event.replace("lifespan.", "the app's "),
                  answer.get("message") or answer.get("error", ""))
        return False


class Server:
    """Serves an ASGI app on sockets already bound (`bind_socket`) with HTTP/1.1 connections of
    our own (router/http/connection.py), until SIGINT/SIGTERM or `should_exit`; then stops
    accepting, lets the answers in flight finish for up to `grace_s`, and runs the app's
    shutdown. A second signal skips the wait. Unlike uvicorn, a drained shutdown exits 0."""

    def __init__(self, app: Any, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0,
                 header_timeout_s: float = 30.0, max_header_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.grace_s = grace_s
        self.on_ready = on_ready
        self.state = ServerState(app, keep_alive_s, header_timeout_s, max_header_bytes + HEAD_SLACK_BYTES)
        self.should_exit = False
        self.force_exit = False
        self.started = False

    def run(self, sockets: list[socket.socket]) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self.serve(sockets))

    async def serve(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        lifespan = _Lifespan(self.app, self.state.lifespan_state)
        if not await lifespan.startup():
            return
        listeners = [await loop.create_server(lambda: HttpConnection(self.state), sock=sock, backlog=2048)
                     for sock in sockets]
        self.started = True
        self.on_ready()
        with self._signals_handled(loop):
            while not self.should_exit:
                await asyncio.sleep(0.1)
        for listener in listeners:
            listener.close()
        await self._drain()
        await lifespan.shutdown()

    async def _drain(self) -> None:
        for connection in list(self.state.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.grace_s
        while (self.state.tasks or self.state.connections) and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.state.tasks):
            task.cancel()
        for connection in list(self.state.connections):
            connection.transport.close()
        if self.state.tasks:
            await asyncio.gather(*self.state.tasks, return_exceptions=True)

    @contextlib.contextmanager
    def _signals_handled(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """SIGINT/SIGTERM start the drain, a second one cuts it short. Signals reach the main
        thread only: a server run in another thread (tests, embedded) stops by `should_exit`."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def serve(
    app: Any, sock: socket.socket, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0,
    header_timeout_s: float = 30.0, max_header_bytes: int = 64 * 1024,
) -> bool:
    """Serve until SIGINT/SIGTERM, then drain in-flight requests. Returns False if startup failed."""
    server = Server(app, grace_s=grace_s, on_ready=on_ready, keep_alive_s=keep_alive_s,
                    header_timeout_s=header_timeout_s, max_header_bytes=max_header_bytes)
    server.run([sock])
    return server.started
