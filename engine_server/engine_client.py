"""The HTTP side's handle on the engine core: per-request output streams over one pipe.

`EngineClient.spawn` starts the core in its own process (the server's default);
`EngineClient.in_thread` runs an engine you built in this process on a thread (tests, and
embedding the server in a program that already holds an engine). Either way the client only
talks to the core through messages (see engine_core), and reads the core's pipe from the
event loop, so delivering a step's outputs costs one wake-up, not one per request.
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing as mp
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from triage_router.policies.request import DEFAULT_PRIORITY

from triage_router.engine_server.checkpoint import load_tokenizer, resolve_model_dir
from triage_router.engine_server.config import EngineConfig
from triage_router.engine_server.engine import EngineLimits, LLMEngine, RequestOutput, RequestRejected
from triage_router.engine_server.engine_core import EngineCore, serve_in_process
from triage_router.engine_server.errors import EngineUnavailable
from triage_router.engine_server.metrics import snapshot
from triage_router.engine_server.sequence import SamplingParams


class EngineStartError(RuntimeError):
    """The engine process could not load its model."""


class EngineClient:
    def __init__(
        self, conn: Connection, limits: EngineLimits, tokenizer: Any, stats: dict[str, float],
        worker: BaseProcess | threading.Thread,
    ) -> None:
        self.limits = limits
        self.tokenizer = tokenizer
        self.stats = stats  # the core's latest snapshot, for /metrics
        self._conn = conn
        self._worker = worker
        self._streams: dict[str, asyncio.Queue[Any]] = {}
        self._resets: deque[asyncio.Future[bool]] = deque()  # answered in the order asked
        # Sends go through a thread: a pipe write blocks while the core is mid-step and the
        # buffer is full (large prompts), and the event loop must never block on that.
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="engine-sender", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = False

    @classmethod
    def spawn(cls, config: EngineConfig) -> EngineClient:
        """Start the engine process and wait until its model is loaded."""
        ctx = mp.get_context("spawn")  # never fork a process that may hold OpenMP threads
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=serve_in_process, args=(config, child_conn), name="triage-engine-core", daemon=True)
        process.start()
        child_conn.close()
        while not conn.poll(0.5):
            if not process.is_alive():
                raise EngineStartError(f"the engine process exited with code {process.exitcode} while loading")
        msg = conn.recv()
        if msg[0] == "failed":
            process.join()
            raise EngineStartError(msg[1])
        _, limits, stats = msg
        # The core converted and cached the checkpoint by now, so this only reads files.
        tokenizer = load_tokenizer(resolve_model_dir(config.model, config.cache_dir))
        return cls(conn, limits, tokenizer, stats, process)

    @classmethod
    def in_thread(cls, engine: LLMEngine) -> EngineClient:
        conn, core_conn = mp.Pipe()
        thread = threading.Thread(target=EngineCore(engine, core_conn).run, name="engine-core", daemon=True)
        thread.start()
        # A Rust tokenizer shared across threads can fail with "Already borrowed": the core
        # detokenizes with the engine's, the HTTP side gets a copy.
        return cls(conn, engine.limits, copy.deepcopy(engine.tokenizer), snapshot(engine), thread)

    @property
    def alive(self) -> bool:
        return not self._lost and self._worker.is_alive()

    def start(self) -> None:
        """Attach to the running event loop (the server's startup hook)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)
        self._sender.start()

    def stop(self) -> None:
        """Stop the core and wait for it (the server's shutdown hook)."""
        if self._loop is not None and not self._lost:
            self._loop.remove_reader(self._conn.fileno())
        if self._sender.is_alive():
            self._outbox.put(("stop",))
            self._outbox.put(None)
            self._sender.join(timeout=5)
        else:
            try:
                self._conn.send(("stop",))
            except OSError:
                pass  # already gone
        self._worker.join(timeout=10)
        if isinstance(self._worker, BaseProcess) and self._worker.is_alive():
            self._worker.terminate()
            self._worker.join()
        self._conn.close()

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *, priority: int = DEFAULT_PRIORITY,
        predicted_output_len: int | None = None, tenant: str = "",
    ) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs. Leaving the iterator early aborts the request."""
        if not self.alive:
            raise EngineUnavailable("the engine is not running")
        stream: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = stream
        self._outbox.put(("add", request_id, prompt_token_ids, params, priority, predicted_output_len, tenant))
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:  # client went away or the consumer stopped: free its KV now
                self._outbox.put(("abort", request_id))

    async def reset_prefix_cache(self) -> bool:
        """Forget every cached block, as vLLM's POST /reset_prefix_cache; False (nothing
        changed) while a request holds blocks."""
        if not self.alive:
            raise EngineUnavailable("the engine is not running")
        assert self._loop is not None
        answer = self._loop.create_future()
        self._resets.append(answer)
        self._outbox.put(("reset_prefix_cache",))
        return await answer

    def _send_loop(self) -> None:
        while (msg := self._outbox.get()) is not None:
            try:
                self._conn.send(msg)
            except OSError:  # the core is gone; the reader reports it to every stream
                return

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            self._on_lost()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "reset_prefix_cache":
            self._resets.popleft().set_result(msg[1])
            return
        _, outputs, failures, self.stats = msg
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream.put_nowait(out)
        for request_id, kind, message in failures:
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(RequestRejected(message) if kind == "rejected" else EngineUnavailable(message))

    def _on_lost(self) -> None:
        """The core died (crash, OOM kill): fail every open request now instead of hanging."""
        self._lost = True
        assert self._loop is not None
        self._loop.remove_reader(self._conn.fileno())
        for stream in self._streams.values():
            stream.put_nowait(EngineUnavailable("the engine core exited"))
        while self._resets:
            self._resets.popleft().set_exception(EngineUnavailable("the engine core exited"))
