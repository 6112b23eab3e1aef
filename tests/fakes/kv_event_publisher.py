"""A KV-event publisher speaking vLLM's wire protocol on real ZeroMQ sockets, for the router's
subscriber tests: PUB for the stream, ROUTER for replays of its buffer. It can skip sequence
numbers, resend old ones, send garbage, forget its buffer and restart, as a test needs."""

from __future__ import annotations

import threading
import time

import msgspec
import zmq

from triage_router.policies.kv_events import END_OF_REPLAY, EventBatch, KVEvent, sequence_bytes


class FakeKVEventPublisher:
    def __init__(self, replay: bool = True, topic: str = "") -> None:
        self._context = zmq.Context.instance()
        self.pub = self._context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.topic = topic.encode()
        self.replay_endpoint: str | None = None
        self.buffer: list[tuple[int, bytes]] = []
        self.next_seq = 0
        self.replays: list[int] = []  # the start of each replay asked for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if replay:
            self.router = self._context.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.replay_endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
            self._thread = threading.Thread(target=self._serve_replays, daemon=True)
            self._thread.start()

    def publish(self, *events: KVEvent, ts: float | None = None, send: bool = True) -> int:
        """One batch; `send=False` buffers it without sending (a message the subscriber missed)."""
        seq = self.next_seq
        self.next_seq += 1
        payload = msgspec.msgpack.encode(EventBatch(time.time() if ts is None else ts, list(events), 0))
        self.buffer.append((seq, payload))
        if send:
            self.send_raw(self.topic, sequence_bytes(seq), payload)
        return seq

    def resend(self, seq: int) -> None:
        self.send_raw(self.topic, sequence_bytes(seq), dict(self.buffer)[seq])

    def send_raw(self, *frames: bytes) -> None:
        self.pub.send_multipart(frames)

    def restart(self) -> None:
        """A new publisher process: the sequence starts at 0 and the buffer is empty."""
        self.next_seq = 0
        self.buffer = []

    def _serve_replays(self) -> None:
        while not self._stop.is_set():
            if not self.router.poll(50):
                continue
            client, _, start = self.router.recv_multipart()
            self.replays.append(int.from_bytes(start, "big"))
            for seq, payload in list(self.buffer):
                if seq >= int.from_bytes(start, "big"):
                    self.router.send_multipart((client, b"", self.topic, sequence_bytes(seq), payload))
            self.router.send_multipart((client, b"", b"", END_OF_REPLAY, b""))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.router.close()
        self.pub.close()
