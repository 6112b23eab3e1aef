"""`triage serve --workers N`: N router processes sharing one port.

Each worker is a whole router (its own event loop, backends, admission queue) bound to the port
with SO_REUSEPORT, so the kernel spreads new connections over them; the parent serves nothing.
The parent:

- holds the port (bound, not listening: it takes no connection) from start to exit, so that a
  restarted worker finds it free of anyone else;
- gives the workers a fresh PROMETHEUS_MULTIPROC_DIR, removed at exit, so that any worker's
  /metrics shows all of them (router/metrics.py);
- forwards SIGTERM and SIGINT (a graceful drain; a second SIGINT cuts it short, as in one
  process) and SIGHUP (each worker reloads the config itself);
- restarts a worker that exits on its own, after 1 s, then 2, 4, ... up to 30 s while it keeps
  exiting within a minute of its start, logging each exit. A worker that fails while the router
  starts fails the start instead (exit status 1).

A worker drains and exits when the parent goes, even by SIGKILL: it reads a pipe that only the
parent writes, and sees it close.

docs/deploy.md ("Several workers") says what each worker knows only for itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from triage_router.router.config import Config, ConfigError
from triage_router.router.config_loader import load_config
from triage_router.router.http import tracing
from triage_router.router.http.server import StartupError, bind_socket, serve, url_of

log = logging.getLogger("triage.workers")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A worker that ran this long before it exited starts again after FIRST_BACKOFF_S.
STABLE_S = 60.0
# Beyond the shutdown grace: a worker still there after both is killed.
STOP_SLACK_S = 10.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold `host`:`port` for the workers: a socket that shares it and does not listen. Anyone
    already there is a clear error, even a socket that would share it (another Triage)."""
    if not sys.platform.startswith("linux"):
        raise StartupError("--workers above 1 needs Linux: other systems' SO_REUSEPORT does not spread connections")
    probe = bind_socket(host, port, listen=False)
    port = probe.getsockname()[1]  # port 0 picks one; every worker binds the one picked
    probe.close()
    return bind_socket(host, port, reuse_port=True, listen=False)


def run_worker(index: int, count: int, config: Config, path: Path, address: tuple[str, int], ready: Connection,
               parent: Connection) -> None:
    """One worker process (spawned, so prometheus_client is first imported here, after the
    parent set METRICS_DIR_VARIABLE)."""
    # Until the reloader takes SIGHUP, one must not end this worker (its default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _stop_with(parent)
    try:
        tracing.configure_from_env()
        sock = bind_socket(*address, reuse_port=True)
    except StartupError as error:
        print(f"triage: error: worker {index}: {error}", file=sys.stderr)
        sys.exit(2)
    from triage_router.router.http.app import create_app

    config = _current_config(config, path)
    server = config.server
    started = serve(create_app(config, config_path=path, worker_index=index, workers=count), sock,
                    grace_s=server.shutdown_grace_s, keep_alive_s=server.keep_alive_s,
                    header_timeout_s=server.header_timeout_s, max_header_bytes=server.max_header_bytes,
                    on_ready=lambda: ready.send(os.getpid()))
    sys.exit(0 if started else 1)


def _current_config(started_with: Config, path: Path) -> Config:
    """What the running workers hold: the file's backends and keys now (a reload's rule), the
    rest as the router started. A worker restarted after a reload then matches the others."""
    from triage_router.router.http.reload import reloaded  # the router's modules load in workers only

    try:
        return reloaded(started_with, load_config(path))
    except (ConfigError, OSError) as error:
        log.error("%s does not load now (%s); this worker starts with the config the router started with", path, error)
        return started_with


def _stop_with(parent: Connection) -> None:
    """Drain and exit once the parent is gone: the parent never writes to this pipe, so a read
    returns only when its end closes."""
    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            parent.recv()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    # The worker's pipe for "ready", until it has said so or exited.
    ready: Connection | None = None
    # Held while the worker runs: its closing tells the worker the parent is gone.
    parent_end: Connection | None = None
    started_at: float = 0.0
    ready_once: bool = False
    # Exits in a row, each within STABLE_S of the start before it.
    failures: int = 0
    restart_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    """Starts the workers, restarts those that exit, forwards signals, stops them all."""

    def __init__(self, count: int, target_args: Callable[[int], tuple[object, ...]], *, grace_s: float,
                 metrics_dir: str, on_ready: Callable[[list[int]], None]) -> None:
        self.workers = [_Worker(index) for index in range(count)]
        self._target_args = target_args
        self._grace_s = grace_s
        self._metrics_dir = metrics_dir
        self._on_ready = on_ready
        self._context = multiprocessing.get_context("spawn")
        self._signals: list[int] = []

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status."""
        wake, wake_end = socket.socketpair()
        for end in (wake, wake_end):
            end.setblocking(False)
        previous = {sig: signal.signal(sig, self._note_signal) for sig in FORWARDED}
        previous_wakeup = signal.set_wakeup_fd(wake_end.fileno())
        try:
            return self._supervise(wake)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake.close()
            wake_end.close()

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _supervise(self, wake: socket.socket) -> int:
        for worker in self.workers:
            self._start(worker)
        starting = True
        while True:
            for signum in self._take_signals(wake, self._wait(wake)):
                if signum == signal.SIGHUP:
                    self._send(signal.SIGHUP)
                else:
                    return self._stop_all(wake)
            for worker in self.workers:
                self._check(worker, starting)
                if starting and worker.restart_at is not None:  # a start that fails is not retried
                    self._stop_all(wake)
                    return 1
            if starting and all(w.ready_once for w in self.workers):
                starting = False
                self._on_ready([w.process.pid for w in self.workers if w.process is not None and w.process.pid])
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    self._start(worker)

    def _wait(self, wake: socket.socket) -> list[object]:
        waited: list[object] = [wake]
        for worker in self.workers:
            # Every worker whose exit is not handled yet, dead or not: its sentinel wakes us once its
            # files are closed, which can be before it can be reaped. Waiting only on the "alive"
            # would lose one reaped here in between, its exit never handled.
            if worker.process is not None and worker.restart_at is None:
                waited.append(worker.process.sentinel)
            if worker.ready is not None:
                waited.append(worker.ready)
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return wait(waited, None if not due else max(0.0, min(due) - time.monotonic()))

    def _take_signals(self, wake: socket.socket, woken: list[object]) -> list[int]:
        if wake in woken:
            with contextlib.suppress(BlockingIOError):
                while wake.recv(512):
                    pass
        taken, self._signals = self._signals, []
        return taken

    def _start(self, worker: _Worker) -> None:
        ready, ready_end = self._context.Pipe(duplex=False)
        parent_watch, parent_end = self._context.Pipe(duplex=False)
        process = self._context.Process(target=run_worker, name=f"triage-worker-{worker.index}",
                                        args=(worker.index, *self._target_args(worker.index), ready_end, parent_watch))
        process.start()
        # The worker's ends are the worker's: closed here, so that its exit or ours is seen.
        ready_end.close()
        parent_watch.close()
        worker.process, worker.ready, worker.parent_end = process, ready, parent_end
        worker.started_at, worker.restart_at = time.monotonic(), None

    def _check(self, worker: _Worker, starting: bool) -> None:
        """Take a worker's "ready", or its exit (and schedule its restart)."""
        if worker.ready is not None and worker.ready.poll():
            try:
                worker.ready.recv()
            except EOFError:  # it exited first: its sentinel says so below
                pass
            else:
                if worker.ready_once:
                    log.warning("worker %d is serving again (pid %s)", worker.index, worker.process.pid)  # type: ignore[union-attr]
                worker.ready_once = True
            worker.ready.close()
            worker.ready = None
        if worker.process is None or worker.alive or worker.restart_at is not None:
            return
        now = time.monotonic()
        self._forget(worker)
        worker.failures = 1 if now - worker.started_at >= STABLE_S else worker.failures + 1
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (worker.failures - 1))
        worker.restart_at = now + delay
        what = " while the router was starting" if starting else f"; restarting it in {delay:g} s"
        log.error("worker %d (pid %s) exited with status %s%s", worker.index, worker.process.pid,
                  _status(worker.process.exitcode), what)

    def _forget(self, worker: _Worker) -> None:
        """A worker gone: drop its gauges (router/metrics.py keeps its counters) and its pipes."""
        from prometheus_client.multiprocess import mark_process_dead

        assert worker.process is not None
        mark_process_dead(worker.process.pid, self._metrics_dir)
        for end in (worker.ready, worker.parent_end):
            if end is not None:
                end.close()
        worker.ready = worker.parent_end = None

    def _send(self, signum: int) -> None:
        for worker in self.workers:
            if worker.alive and worker.process is not None and worker.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)

    def _stop_all(self, wake: socket.socket) -> int:
        """SIGTERM every worker; wait for the drain (a SIGINT meanwhile is passed on, to cut it
        short); kill what is left after the grace. 0 if every worker exited 0."""
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s + STOP_SLACK_S
        # Sentinels of workers not seen to end yet (see _wait for why not "alive").
        running = {w.process.sentinel for w in self.workers if w.process is not None and w.alive}
        while running and (left := deadline - time.monotonic()) > 0:
            woken = wait([wake, *running], left)
            running.difference_update(woken)
            if signal.SIGINT in self._take_signals(wake, woken):
                self._send(signal.SIGINT)
        status = 0
        for worker in self.workers:
            if worker.process is None:
                continue
            if worker.process.sentinel in running:
                log.error("worker %d did not stop within %g s; killing it", worker.index, self._grace_s + STOP_SLACK_S)
                worker.process.kill()
            worker.process.join()
            if worker.restart_at is None:  # not already forgotten
                self._forget(worker)
            if worker.process.exitcode != 0 and worker.restart_at is None:
                log.error("worker %d exited with status %s", worker.index, _status(worker.process.exitcode))
                status = 1
        return status


def _status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"{code} ({signal.Signals(-code).name})"
    return str(code)


def serve_workers(config: Config, path: Path, sock: socket.socket, count: int) -> int:
    """Run `count` workers on the port `sock` holds (from reserve_port) until SIGTERM or
    SIGINT; the exit status. Engines with `launch = true` are the caller's: started before,
    stopped after."""
    address = (sock.getsockname()[0], sock.getsockname()[1])
    metrics_dir = tempfile.mkdtemp(prefix="triage-metrics-")
    # Spawned workers inherit the environment as it is when each starts.
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir

    def on_ready(pids: list[int]) -> None:
        print(f"Triage listening on {url_of(sock)}", flush=True)
        print(f"  {count} workers, pids {', '.join(map(str, pids))}", flush=True)

    try:
        return Supervisor(count, lambda index: (count, config, path, address), grace_s=config.server.shutdown_grace_s,
                          metrics_dir=metrics_dir, on_ready=on_ready).run()
    finally:
        os.environ.pop(METRICS_DIR_VARIABLE, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        sock.close()
