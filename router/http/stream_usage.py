"""Usage in streams: ask the upstream for it, and take it out again if the client did not ask.

The length predictor learns from `usage.completion_tokens`, which a streamed answer carries
only when the request says `stream_options: {"include_usage": true}`. When the client did not
ask, the router adds it, and removes the extra event (the one with `"choices": []` and a
`usage` object) from what the client receives, so the client sees the stream it asked for.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class _StreamFields(msgspec.Struct):
    stream_options: Any = None


_decode_fields = msgspec.json.Decoder(_StreamFields)


def asks_for_usage(body: bytes) -> bool:
    try:
        options = _decode_fields.decode(body).stream_options
    except msgspec.DecodeError:
        return False
    return isinstance(options, dict) and bool(options.get("include_usage"))


def stream_options_with_usage(body: bytes) -> dict[str, Any]:
    """The request's own stream_options, with include_usage on."""
    try:
        options = _decode_fields.decode(body).stream_options
    except msgspec.DecodeError:
        options = None
    return {**(options if isinstance(options, dict) else {}), "include_usage": True}


def _usage_only(event: bytes) -> bool:
    """An SSE event whose data is a chunk with no choices and a usage object."""
    if b'"usage"' not in event:
        return False
    payload = event.strip()
    if not payload.startswith(b"data:"):
        return False
    try:
        chunk = msgspec.json.decode(payload[5:].strip())
    except msgspec.DecodeError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict)


class UsageFilter:
    """Splits a byte stream into SSE events, holds back the usage-only event, passes the rest."""

    def __init__(self) -> None:
        self._buffer = b""
        self.usage_event: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        """What may go to the client now; an incomplete trailing event waits for the next chunk."""
        self._buffer += chunk
        out = []
        start = 0
        for end in _EVENT_END.finditer(self._buffer):
            event = self._buffer[start : end.end()]
            start = end.end()
            if _usage_only(event):
                self.usage_event = event
            else:
                out.append(event)
        self._buffer = self._buffer[start:]
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest
