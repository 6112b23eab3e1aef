"""Run a Triage app on a real socket in a background thread, the way `triage serve` does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from triage_router.router.http.app import create_app
from triage_router.router.config import Config
from triage_router.router.config_loader import parse_config
from triage_router.router.http.server import Server, bind_socket, url_of


@dataclass
class LiveProxy:
    url: str
    server: Server
    thread: threading.Thread

    def shut_down(self) -> None:
        """What SIGTERM does: stop accepting, drain what is in flight, exit."""
        self.server.should_exit = True


@contextmanager
def running_proxy(config: Config | str) -> Iterator[LiveProxy]:
    """Yield a live proxy on a real port; drain and stop it on exit."""
    if isinstance(config, str):
        config = parse_config(config)
    sock = bind_socket("127.0.0.1", 0)
    ready = threading.Event()
    server = Server(create_app(config), grace_s=5.0, on_ready=ready.set, keep_alive_s=config.server.keep_alive_s,
                    header_timeout_s=config.server.header_timeout_s,
                    max_header_bytes=config.server.max_header_bytes)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not ready.wait(15):
        raise RuntimeError("the proxy did not start")
    try:
        yield LiveProxy(url_of(sock), server, thread)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
