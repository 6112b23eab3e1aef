"""The floor under Triage's proxy overhead: the same server (router/http/server.py: httptools on
uvloop) and the same upstream client (router/routing/upstream.py), relaying with nothing else:
no priority, fingerprint, prediction, placement, metrics or log. run.py's `bare` target.

    .venv/bin/python bench/proxy_overhead/bare_proxy.py UPSTREAM_URL PORT

What Triage adds over this is the cost of its own routing; what this adds over nginx alone is
the cost of the stack.
"""

from __future__ import annotations

import sys
from typing import Any

from triage_router.router.config import BackendConfig, UpstreamConfig
from triage_router.router.http.server import bind_socket, serve
from triage_router.router.routing.backends import Backend
from triage_router.router.routing.upstream import UpstreamClient

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}


def relay_to(upstream_url: str) -> Any:
    client = UpstreamClient(UpstreamConfig())
    backend = Backend(BackendConfig(name="upstream", url=upstream_url), block_chars=256)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan: the server serves the app without one
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {"content-type": "application/json"}
        response = await client.post(backend, scope["path"], headers, body)
        try:
            streamed = response.content_type == "text/event-stream"
            head = [header for header in response.raw_headers if header[0] not in HOP_BY_HOP]
            if not streamed:
                answer = await response.read(60)
                await send({"type": "http.response.start", "status": response.status,
                            "headers": [*head, (b"content-length", str(len(answer)).encode())]})
                await send({"type": "http.response.body", "body": answer})
                return
            await send({"type": "http.response.start", "status": response.status, "headers": head})
            async for chunk in response.chunks(60):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.close()

    return app


if __name__ == "__main__":
    serve(relay_to(sys.argv[1]), bind_socket("127.0.0.1", int(sys.argv[2])), grace_s=1.0,
          on_ready=lambda: None)
