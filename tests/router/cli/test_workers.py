"""The workers' supervisor, apart from a real router (tests/e2e/test_workers.py runs one)."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time

from triage_router.router.cli.workers import Supervisor


def test_a_worker_reaped_before_the_wait_still_wakes_the_supervisor() -> None:
    """A worker's sentinel wakes the supervisor when its files close, which can be before the
    process can be reaped; reaped in between (by `alive`), it must still be waited on, or its
    exit is never handled and it never restarts (the e2e restart test failed 1 run in 3-5)."""
    supervisor = Supervisor(1, lambda index: (), grace_s=1.0, metrics_dir="", on_ready=lambda pids: None)
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()  # exited and reaped: `alive` is False, and no exit was handled yet
    worker = supervisor.workers[0]
    worker.process = process
    woken: list[object] = []
    wake, other_end = socket.socketpair()
    with wake, other_end:
        waiter = threading.Thread(target=lambda: woken.extend(supervisor._wait(wake)), daemon=True)  # noqa: SLF001
        waiter.start()
        waiter.join(2.0)
        missed = waiter.is_alive()
        other_end.send(b"x")  # releases a wait that missed the sentinel
        waiter.join(2.0)
    assert not missed, "the supervisor waited past a worker's exit"
    assert process.sentinel in woken
