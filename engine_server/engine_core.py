"""The engine's step loop, driven by messages over a pipe.

In production it runs in its own process (`serve_in_process`), as vLLM's EngineCore does: the
HTTP side's Python (parsing, SSE chunks for every stream at every step) then never competes
with the step loop for the GIL. Each of the ~1,000 small tensor ops of a step releases and
retakes the GIL, so sharing it with a busy event loop stretched a batch-32 decode step from
about 50 ms to 85 ms. The same loop also runs in a thread for tests and embedding.

Messages in: ("add", request_id, prompt_token_ids, params, priority, predicted_output_len, tenant),
("abort", request_id), ("reset_prefix_cache",), ("stop",). Messages out: ("ready", limits, stats)
or ("failed", reason) once at start-up, then ("step", outputs, failures, stats) after every step
and after every batch of messages that changed something, where failures are
(request_id, kind, message) with kind "rejected" (can never run) or "failed" (the step
raised); and ("reset_prefix_cache", success) for each reset asked for, in order.
"""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection
from typing import Any

from triage_router.engine_server.config import EngineConfig
from triage_router.engine_server.engine import LLMEngine, RequestOutput, RequestRejected
from triage_router.engine_server.metrics import snapshot

log = logging.getLogger("engine_server")

Failure = tuple[str, str, str]


class EngineCore:
    def __init__(self, engine: LLMEngine, conn: Connection) -> None:
        self.engine = engine
        self.conn = conn

    def run(self) -> None:
        """Serve until told to stop or until the other end goes away."""
        try:
            self._serve()
        finally:
            self.conn.close()  # the client sees EOF: a core that stopped never leaves it hanging

    def _serve(self) -> None:
        engine = self.engine
        while True:
            try:
                # Block only when idle; between steps, take whatever arrived during the step.
                messages = [self.conn.recv()] if not engine.has_work() else []
                while self.conn.poll():
                    messages.append(self.conn.recv())
            except (EOFError, OSError):  # the HTTP side is gone: nobody to serve
                return
            outputs: list[RequestOutput] = []
            failures: list[Failure] = []
            for msg in messages:
                if msg[0] == "stop":
                    return
                self._apply(msg, outputs, failures)
            if engine.has_work():
                try:
                    outputs.extend(engine.step())
                except Exception as e:  # a failed step poisons every request in it: fail them all
                    log.exception("engine step failed")
                    for request_id in list(engine.seqs):
                        engine.abort(request_id)
                        failures.append((request_id, "failed", f"engine step failed: {e}"))
            if messages or outputs or failures:
                self.conn.send(("step", outputs, failures, snapshot(engine)))

    def _apply(self, msg: tuple[Any, ...], outputs: list[RequestOutput], failures: list[Failure]) -> None:
        if msg[0] == "add":
            _, request_id, ids, params, priority, predicted, tenant = msg
            try:
                self.engine.add_request(request_id, ids, params, priority=priority, predicted_output_len=predicted,
                                        tenant=tenant)
            except RequestRejected as e:
                failures.append((request_id, "rejected", str(e)))
        elif msg[0] == "abort":
            out = self.engine.abort(msg[1])
            if out is not None:
                outputs.append(out)
        elif msg[0] == "reset_prefix_cache":
            self.conn.send(("reset_prefix_cache", self.engine.reset_prefix_cache()))
        else:
            raise ValueError(f"unknown engine message {msg[0]!r}")


def serve_in_process(config: EngineConfig, conn: Connection) -> None:
    """The engine process's entry point: load, report ready (or why not), then serve."""
    # Ctrl-C reaches the whole process group; the HTTP process owns shutdown and says "stop".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = LLMEngine.from_config(config)
    except Exception as e:  # any load failure is fatal and must say why
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", engine.limits, snapshot(engine)))
    try:
        EngineCore(engine, conn).run()
    finally:
        engine.close()
