"""The access log: one JSON line per request to a relay path, written when the request ends.

The proxy notes what happens on the request's `Outcome` (router/context.py) as it goes; the line is
built once at the end, with one msgspec encode, and lines are written whole, several at a time with
one `os.write` (AccessLog), so that lines from concurrent requests never interleave and the log
costs a few microseconds a request (docs/benchmarks.md, "Proxy overhead"). An API key appears by
its name only (auth.py, key_name), never the key. docs/observability.md lists the fields.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import msgspec

from triage_router.router.config import ApiKeyConfig, LogConfig
from triage_router.router.context import Outcome, RequestContext
from triage_router.router.http.auth import key_name
from triage_router.router.http.server import StartupError

log = logging.getLogger("triage.access_log")

# nginx's status for a request whose client went away before any answer was sent.
CLIENT_CLOSED = 499
# A request that ended without an answer and without its client leaving: a failure of ours,
# which our server (router/http/request_cycle.py) answers with this.
NO_ANSWER = 500
# Lines are gathered this long, or to this many, then written at once.
FLUSH_EVERY_S = 0.1
FLUSH_LINES = 256


class AccessLine(msgspec.Struct):
    """One line of the log; the fields' order is the keys' order."""

    time: str
    request_id: str
    method: str
    path: str
    status: int
    error: str | None
    key: str | None
    tenant: str | None
    model: str | None
    stream: bool | None
    priority: int | None
    priority_source: str | None
    backend: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    queue_s: float | None
    ttft_s: float | None
    total_s: float
    client_disconnected: bool


_encode = msgspec.json.Encoder().encode


class _UtcClock:
    """ISO 8601 times in UTC, to the millisecond. The date and time of day are formatted once a
    second: strftime alone cost 3.7 µs a line."""

    __slots__ = ("second", "prefix")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def format(self, epoch_s: float) -> str:
        second = int(epoch_s)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((epoch_s - second) * 1000):03d}Z"


_utc = _UtcClock().format


def _seconds(value: float) -> float:
    """To the microsecond, written as 0.000226 rather than 0.00022613...: a duration is never
    negative, and this costs a tenth of round()."""
    return int(value * 1e6 + 0.5) / 1e6


def access_line(
    scope: dict[str, Any], request_id: str, arrived: float, ended: float, outcome: Outcome,
    ctx: RequestContext | None, api_key: ApiKeyConfig | None,
) -> AccessLine:
    """The line for one request: `arrived` and `ended` (now) are `time.perf_counter()` readings; `ctx`
    is None for a request refused before it was read, and `api_key` the key it was admitted
    with, if any."""
    status = outcome.status or (CLIENT_CLOSED if outcome.client_gone else NO_ANSWER)
    decision = ctx.priority if ctx is not None else None
    key = key_name(api_key) if api_key is not None else None
    return AccessLine(
        time=_utc(time.time() - (ended - arrived)),
        request_id=request_id,
        method=scope["method"],
        path=scope["path"],
        status=status,
        error=outcome.error or None,
        key=key,
        # Refused before it was read: a keyed request's tenant is still its key's name.
        tenant=(ctx.tenant or None) if ctx is not None else key,
        model=(ctx.model or None) if ctx is not None else None,
        stream=ctx.stream if ctx is not None else None,
        priority=decision.priority if decision is not None else None,
        priority_source=decision.source if decision is not None else None,
        backend=outcome.backend or None,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        queue_s=None if outcome.queue_s is None else _seconds(outcome.queue_s),
        ttft_s=None if outcome.ttft_s is None else _seconds(outcome.ttft_s),
        total_s=_seconds(ended - arrived),
        client_disconnected=outcome.client_gone,
    )


class AccessLog:
    """Appends lines to stdout or to `[log] access_file`, gathered for up to FLUSH_EVERY_S (or
    FLUSH_LINES lines) and written with one system call: a write per request cost about 35 µs
    of a relayed request's CPU (docs/benchmarks.md, "Proxy overhead"). Lines
    still gathered are written on shutdown; a killed process loses at most FLUSH_EVERY_S of them."""

    def __init__(self, config: LogConfig) -> None:
        self.path = config.access_file
        self._failed = False
        self._pending: list[bytes] = []
        if not self.path:
            self._fd = 1
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise StartupError(f"log.access_file: cannot open {self.path!r}: {error.strerror}") from None

    def write(self, line: AccessLine) -> None:
        self._pending.append(_encode(line))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_later(FLUSH_EVERY_S, self.flush)
            except RuntimeError:  # no event loop: nothing would flush it later
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._pending.append(b"")
        data = b"\n".join(self._pending)
        self._pending.clear()
        try:
            # One call in practice; a short write (a full pipe) goes on where it stopped.
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as error:
            # Requests go on without their log line rather than fail; said once, not per request.
            if not self._failed:
                self._failed = True
                log.error("access log: cannot write to %s (%s); lines are being lost", self.path or "stdout", error)

    def close(self) -> None:
        self.flush()
        if self.path:
            os.close(self._fd)
