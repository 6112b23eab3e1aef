"""The data-plane HTTP client that carries requests to backends.

aiohttp rather than httpx here: on this 2-core machine a litestar proxy relaying through
httpx's pool topped out near 800 req/s at concurrency 32, and near 6,500 through aiohttp
(a minimal litestar proxy in front of a static nginx; encode/httpx#3215). The control plane (probes, listings) keeps httpx.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from triage_router.router.routing.backends import Backend
from triage_router.router.config import UpstreamConfig
from triage_router.router.errors import UpstreamTimeout, UpstreamUnreachable

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the client library computes itself.
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


class _Attempt:
    """Whether a request went out on a connection from the pool (aiohttp's tracing tells)."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _mark_reused(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
    if isinstance(context.trace_request_ctx, _Attempt):
        context.trace_request_ctx.reused = True


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout_s, sock_read=config.read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop that will use it.
        # Idle connections are dropped before uvicorn's default 5 s (vLLM's server) drops them.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=STALE_AFTER_S, ttl_dns_cache=300)
        reuse = aiohttp.TraceConfig()
        reuse.on_connection_reuseconn.append(_mark_reused)
        return aiohttp.ClientSession(
            connector=connector,
            trace_configs=[reuse],
            timeout=self._timeout,
            # Bodies pass through as the upstream encoded them, with their content-encoding.
            auto_decompress=False,
            # Send only what the client sent; no Accept-Encoding or User-Agent of our own.
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )

    def _limits(self, backend: Backend) -> tuple[aiohttp.ClientTimeout | None, float]:
        """The backend's own connect and idle timeouts (None: the session's), and its first-byte one."""
        own = backend.config
        first_byte = own.first_byte_timeout_s or self.config.first_byte_timeout_s
        if own.connect_timeout_s is None and own.read_timeout_s is None:
            return None, first_byte
        timeout = aiohttp.ClientTimeout(total=None, connect=own.connect_timeout_s or self.config.connect_timeout_s,
                                        sock_read=own.read_timeout_s or self.config.read_timeout_s)
        return timeout, first_byte

    async def post(self, backend: Backend, path: str, headers: dict[str, str], body: bytes) -> aiohttp.ClientResponse:
        """Send a request and return once the response head has arrived."""
        if self._session is None:
            self._session = self._open_session()
        timeout, first_byte = self._limits(backend)
        options = {"data": body, "headers": headers, **({"timeout": timeout} if timeout is not None else {})}
        try:
            # asyncio.timeout, not wait_for: no extra task per request on the hot path.
            async with asyncio.timeout(first_byte):
                attempt = _Attempt()
                try:
                    return await self._session.post(backend.base_url + path, trace_request_ctx=attempt, **options)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                    if isinstance(error, aiohttp.ClientConnectorError) or not attempt.reused:
                        raise
                    # A pooled connection closed before any answer: the server shut it as we
                    # reused it (keep-alive race), and never read the request. Once more.
                    return await self._session.post(backend.base_url + path, **options)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as error:
            raise UpstreamTimeout(f"backend {backend.name} did not answer in time") from error
        except aiohttp.ClientError as error:
            raise UpstreamUnreachable(f"backend {backend.name} is unreachable: {error}") from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
