"""A stand-in for our engine, for `launch = true` in tests that cannot load a model.

`python -m tests.fakes.launched_engine --host H --port P --record FILE`: serves the fake
OpenAI backend (tests/fakes/upstream.py) on P, after appending its pid to FILE, until SIGTERM.
Tests point the launcher at it by setting `engine_launcher.ENGINE_MODULE` in the router's process.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from tests.fakes.upstream import FakeUpstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with args.record.open("a") as record:
        record.write(f"{os.getpid()}\n")
    server = FakeUpstream("engine", port=args.port).start()
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
