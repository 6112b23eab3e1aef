"""Runs the synchronous engine on its own thread and bridges it to asyncio.

The HTTP side never touches engine state directly: it posts adds and aborts to an inbox
and reads per-request queues. The engine thread drains the inbox between steps, so a step
always sees a consistent set of requests, and it sleeps on a condition when idle.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from engine_server.engine import LLMEngine, RequestOutput, RequestRejected
from engine_server.errors import EngineUnavailable
from engine_server.sequence import SamplingParams

log = logging.getLogger("engine_server")


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, Any]] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.failure: BaseException | None = None

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *, priority: int = 2,
        predicted_output_len: int | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs. Leaving the iterator early aborts the request."""
        if not self.alive:
            raise EngineUnavailable("the engine loop is not running")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), queue)
        self._post(("add", (request_id, prompt_token_ids, params, priority, predicted_output_len)))
        finished = False
        try:
            while True:
                item = await queue.get()
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
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._post(("abort", request_id))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is queued or running (tests and shutdown use it)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inbox and not self.engine.has_work(), timeout)

    def _post(self, msg: tuple[str, Any]) -> None:
        with self._cond:
            self._inbox.append(msg)
            self._cond.notify_all()

    def _deliver(self, request_id: str, item: Any) -> None:
        entry = self._streams.get(request_id)
        if entry is not None:
            loop, queue = entry
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # that event loop is closed: nobody is listening any more
                self._streams.pop(request_id, None)
                self.engine.abort(request_id)  # we are on the engine thread: abort directly

    def _run(self) -> None:
        engine = self.engine
        while True:
            with self._cond:
                self._cond.notify_all()  # wake wait_idle() callers after each step
                while not self._inbox and not engine.has_work() and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                inbox, self._inbox = self._inbox, []
            for kind, payload in inbox:
                if kind == "add":
                    request_id, ids, params, priority, predicted = payload
                    if request_id not in self._streams:  # gave up before we saw it
                        continue
                    try:
                        engine.add_request(request_id, ids, params, priority=priority, predicted_output_len=predicted)
                    except RequestRejected as e:
                        self._deliver(request_id, e)
                else:
                    out = engine.abort(payload)
                    if out is not None:
                        self._deliver(payload, out)
            if not engine.has_work():
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # a failed step poisons every request in it: fail them all
                log.exception("engine step failed")
                self.failure = e
                for request_id in list(engine.seqs):
                    engine.abort(request_id)
                    self._deliver(request_id, EngineUnavailable(f"engine step failed: {e}"))
                continue
            for out in outputs:
                self._deliver(out.request_id, out)
