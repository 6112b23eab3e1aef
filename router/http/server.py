"""Running an app: bind first (so a taken port is a clear error), then serve with uvicorn."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn


class StartupError(Exception):
    """The server cannot start; the message says why."""


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
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


def make_server(app: Any, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
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
    app: Any, sock: socket.socket, *, grace_s: float, on_ready: Callable[[], None], keep_alive_s: float = 75.0
) -> bool:
    """Serve until SIGINT/SIGTERM, then drain in-flight requests. Returns False if startup failed."""
    server = make_server(app, grace_s=grace_s, on_ready=on_ready, keep_alive_s=keep_alive_s)
    server.run(sockets=[sock])
    return server.started
