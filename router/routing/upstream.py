"""The data-plane HTTP client that carries requests to backends.

Its own small HTTP/1.1 client (router/routing/upstream_connection.py) over a keep-alive pool per
backend origin: httpx's pool topped out near 800 req/s at concurrency 32 on this 2-core
machine (encode/httpx#3215), and aiohttp's client was then the largest single cost of a relayed
request (docs/benchmarks.md, "The hot path"). The control plane (probes, listings) keeps httpx.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from triage_router.router.config import UpstreamConfig
from triage_router.router.errors import UpstreamTimeout, UpstreamUnreachable
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.upstream_connection import (ClosedBeforeAnswer, NoAnswerInTime, UpstreamConnection,
                                                              UpstreamResponse)

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the client computes itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authorization", "proxy-authenticate", "host", "content-length"}
)
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in _HOP_BY_HOP)
# Pooled connections idle this long are dropped: before uvicorn's default 5 s keep-alive, which
# vLLM's server runs, closes them from its side.
STALE_AFTER_S = 4.0


def forwarded_headers(client_headers: dict[str, str], backend: Backend, request_id: str) -> dict[str, str]:
    """The client's end-to-end headers, with the backend's key in place of the client's."""
    headers = {name: value for name, value in client_headers.items() if name not in _HOP_BY_HOP}
    if not backend.config.forward_client_key:
        headers.pop("authorization", None)
    if backend.config.api_key:
        headers["authorization"] = f"Bearer {backend.config.api_key}"
    headers["x-request-id"] = request_id
    return headers


@dataclass(slots=True)
class _Origin:
    """Where a backend's URL points, parsed once, with its idle connections."""

    host: str
    port: int
    tls: bool
    # Prepended to every request's path: a backend URL may carry one ("https://host/openai").
    path_prefix: str
    # The Host header: the URL's own spelling, the port left out where it is the scheme's default.
    host_header: str
    idle: deque[UpstreamConnection]

    @classmethod
    def of(cls, url: str) -> _Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnreachable(f"cannot send to {url!r}: not an http(s) URL")
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, tls, parts.path.rstrip("/"), parts.netloc.rpartition("@")[2], deque())


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._origins: dict[str, _Origin] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, backend: Backend, path: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        """Send a request and return once the answer's head has arrived. Read its body within
        the backend's read timeout (`read_timeout`), then close it."""
        origin = self._origins.get(backend.base_url)
        if origin is None:
            origin = self._origins[backend.base_url] = _Origin.of(backend.base_url)
        head = _request_head(origin, path, headers, len(body))
        connection = self._idle(origin)
        # Silence counts from the request on, as nginx's proxy_read_timeout does: the head must
        # come within both limits, a new connection's connect included.
        first_byte = backend.config.first_byte_timeout_s or self.config.first_byte_timeout_s
        loop = connection.loop if connection is not None else asyncio.get_running_loop()
        deadline = loop.time() + min(first_byte, self.read_timeout(backend))
        try:
            return await self._exchange(origin, backend, head, body, deadline, connection)
        except NoAnswerInTime:
            raise UpstreamTimeout(f"backend {backend.name} did not answer in time") from None
        except UpstreamUnreachable as error:
            raise UpstreamUnreachable(f"backend {backend.name} is unreachable: {error.message}") from None

    async def _exchange(self, origin: _Origin, backend: Backend, head: bytes, body: bytes, deadline: float,
                        connection: UpstreamConnection | None) -> UpstreamResponse:
        """Over `connection` (an idle one, or None for a new one)."""
        reused = connection is not None
        while True:
            if connection is None:
                connection = await self._connect(origin, backend, deadline)
            try:
                return await connection.send(head, body, deadline)
            except ClosedBeforeAnswer:
                connection.close()
                if not reused:
                    raise
                # A pooled connection closed before any answer: the server shut it as we reused
                # it (keep-alive race), and never read the request. Once more, on a new one.
                connection, reused = None, False
            except BaseException:
                # Timed out, or the client left: closing tells the backend to stop generating.
                connection.close()
                raise

    def read_timeout(self, backend: Backend) -> float:
        return backend.config.read_timeout_s or self.config.read_timeout_s

    def _idle(self, origin: _Origin) -> UpstreamConnection | None:
        """The most recently used idle connection still fit to reuse; staler ones are closed."""
        idle = origin.idle
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.loop.time() - connection.idle_since < STALE_AFTER_S:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, backend: Backend, deadline: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        connect_s = backend.config.connect_timeout_s or self.config.connect_timeout_s
        try:
            async with asyncio.timeout_at(min(loop.time() + connect_s, deadline)):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(origin.idle, loop), origin.host, origin.port, ssl=tls)
        except TimeoutError:
            raise UpstreamTimeout(f"backend {backend.name} did not accept a connection in time") from None
        except OSError as error:
            raise UpstreamUnreachable(f"cannot connect to {origin.host}:{origin.port}: {error.strerror or error}") \
                from None
        return connection

    async def close(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()


def _request_head(origin: _Origin, path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {origin.path_prefix}{path} HTTP/1.1\r\nhost: {origin.host_header}\r\ncontent-length: {length}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")
