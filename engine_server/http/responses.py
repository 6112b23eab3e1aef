"""JSON and server-sent-event responses, encoded with the engine's msgspec encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Response
from litestar.response import Stream

from triage_router.engine_server.api_types import encoder
from triage_router.router.errors import ApiError

DONE = b"data: [DONE]\n\n"


def json_response(body: Any, status: int = 200) -> Response[Any]:
    return Response(encoder.encode(body), status_code=status, media_type="application/json")


def error_response(err: ApiError) -> Response[Any]:
    return Response(encoder.encode(err.envelope()), status_code=err.status, media_type="application/json")


def event(body: Any) -> bytes:
    return b"data: " + encoder.encode(body) + b"\n\n"


class _EventStream(Stream):
    """A Stream whose own media type wins over the handler's JSON default (litestar passes
    the handler's media type first)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


def event_stream(events: AsyncIterator[bytes]) -> Stream:
    return _EventStream(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
