"""Helpers shared by the reliability benchmarks (kill.py, abuse.py, soak.py): a vLLM-like fake
that streams and runs many requests at once, a streaming client that records how a stream
ended, readings of a process's memory and file descriptors, and small figures helpers.

The fake extends bench/scheduling/mixed_burst.py's `FakeVllm` (its /metrics, /health and
/v1/models are kept): `slots` requests run at once instead of one, `"stream": true` is answered
with Server-Sent Events, one chunk per token, and `max_tokens` is checked as vLLM checks it
(400 outside 1..max_model_len), so that a hostile `max_tokens` gets vLLM's answer rather than
an hour of sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientPayloadError, ClientSession, ClientTimeout, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduling"))
# bench/fleet too: the scripts here take its pct and fmt (run.py) and its processes (procs.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
from mixed_burst import MODEL, RESULTS, ROOT, FakeVllm


class StreamingFake(FakeVllm):
    """`slots` requests at a time (the rest wait, shown on /metrics), each `max_tokens` x
    `s_per_token`; streamed on request."""

    def __init__(self, s_per_token: float, slots: int = 64, max_model_len: int = 4096) -> None:
        super().__init__(s_per_token)
        self.max_model_len = max_model_len
        self._slots = asyncio.Semaphore(slots)
        self.answered = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _vllm_error("the body is not valid JSON")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.max_model_len:
            return _vllm_error(f"max_tokens must be an integer in [1, {self.max_model_len}], got {max_tokens!r}")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            if body.get("stream"):
                return await self._stream(request, body, max_tokens)
            await asyncio.sleep(max_tokens * self.s_per_token)
            return web.json_response(_completion(max_tokens))
        finally:
            self.running -= 1
            self._slots.release()
            self.answered += 1

    async def _stream(self, request: web.Request, body: dict[str, Any], max_tokens: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(max_tokens):
                await asyncio.sleep(self.s_per_token)
                await response.write(_event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": MODEL,
                                             "choices": [{"index": 0, "delta": {"content": "tok "},
                                                          "finish_reason": "length" if i == max_tokens - 1 else None}]}))
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(_event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": MODEL,
                                             "choices": [], "usage": _usage(max_tokens)}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, ClientError):
            pass  # the router closed the stream: its client went away
        return response


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}


def _completion(tokens: int) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(["tok"] * tokens)},
                         "finish_reason": "length"}],
            "usage": _usage(tokens)}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _vllm_error(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}},
                             status=400)


@dataclass(slots=True)
class StreamOutcome:
    """How one streamed request went, as its client saw it. Times are time.perf_counter()."""

    sent_at: float
    status: int | None = None  # None: no HTTP answer at all
    backend: str | None = None  # x-triage-backend
    retry_after: str | None = None
    head_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    tokens: int = 0
    error_event: bool = False  # a `data: {"error": ...}` event arrived
    done: bool = False  # `data: [DONE]` arrived
    # "clean": the body ended properly (chunked encoding's last chunk); "broken": the connection
    # ended mid-body; "timeout": silence past the read timeout (a hang); "refused": no answer;
    # "dropped": our own client left on purpose.
    ending: str = ""
    error: str = ""


async def stream_chat(session: ClientSession, url: str, body: dict[str, Any], headers: dict[str, str],
                      read_timeout: float, drop_after_tokens: int | None = None) -> StreamOutcome:
    """POST a streamed chat completion and read it to its end (or drop it after a few tokens)."""
    outcome = StreamOutcome(sent_at=time.perf_counter())
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers,
                                timeout=ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)) as response:
            outcome.status = response.status
            outcome.backend = response.headers.get("x-triage-backend")
            outcome.retry_after = response.headers.get("retry-after")
            outcome.head_at = time.perf_counter()
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    outcome.done = True
                elif payload.startswith(b'{"error"'):
                    outcome.error_event = True
                    outcome.error = payload.decode(errors="replace")[:200]
                elif b'"content"' in payload:
                    outcome.tokens += 1
                    if outcome.first_token_at is None:
                        outcome.first_token_at = time.perf_counter()
                    if drop_after_tokens is not None and outcome.tokens >= drop_after_tokens:
                        outcome.ending = "dropped"
                        break
            outcome.ending = outcome.ending or "clean"
    except ClientPayloadError as error:
        outcome.ending, outcome.error = "broken", repr(error)[:200]
    except TimeoutError as error:
        outcome.ending, outcome.error = "timeout", repr(error)[:200]
    except ClientError as error:
        outcome.ending = "broken" if outcome.status is not None else "refused"
        outcome.error = repr(error)[:200]
    outcome.ended_at = time.perf_counter()
    return outcome


async def post_chat(session: ClientSession, url: str, body: dict[str, Any], headers: dict[str, str],
                    timeout: float) -> StreamOutcome:
    """POST a chat completion that is not streamed; `done` once a whole answer with choices came."""
    outcome = StreamOutcome(sent_at=time.perf_counter())
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers,
                                timeout=ClientTimeout(total=timeout)) as response:
            outcome.status = response.status
            outcome.backend = response.headers.get("x-triage-backend")
            outcome.retry_after = response.headers.get("retry-after")
            outcome.head_at = time.perf_counter()
            answer = await response.read()
            outcome.done = response.status == 200 and b'"choices"' in answer
            if response.status != 200:
                outcome.error = answer.decode(errors="replace")[:200]
            outcome.ending = "clean"
    except TimeoutError as error:
        outcome.ending, outcome.error = "timeout", repr(error)[:200]
    except ClientError as error:
        outcome.ending = "broken" if outcome.status is not None else "refused"
        outcome.error = repr(error)[:200]
    outcome.ended_at = time.perf_counter()
    return outcome


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: resident memory, open file descriptors, threads."""

    at: float  # time.perf_counter()
    rss_kib: int
    fds: int
    threads: int


def read_proc(pid: int) -> ProcSample:
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return ProcSample(time.perf_counter(), int(fields["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")),
                      int(fields["Threads"]))


class ProcWatch:
    """Reads a process every `interval_s` in the background, to catch peaks between phases."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[ProcSample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append(read_proc(self.pid))
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[ProcSample]:
        return [s for s in self.samples if start <= s.at <= end]


def git_commit() -> str:
    """The short commit of the code under test: the checkout this file is in."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_header(started_utc: str) -> dict[str, Any]:
    """What every result records about its run: the command, when, the commit, the machine load."""
    return {"command": "python " + " ".join(sys.argv), "started_utc": started_utc, "commit": git_commit(),
            "loadavg_at_start": list(os.getloadavg()), "cpus": os.cpu_count()}


def save_result(kind: str, header: dict[str, Any], result: dict[str, Any], args: Any) -> Path:
    """Record the run with its header, arguments and end load as bench/results/<kind>-<start>.json."""
    result.update(header, args=vars(args), loadavg_at_end=list(os.getloadavg()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{header['started_utc']}.json"
    path.write_text(json.dumps(result, indent=1))
    return path
