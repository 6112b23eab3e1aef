"""Publishes KV-cache event batches over ZeroMQ exactly as vLLM's `ZmqEventPublisher` does.

Each batch goes out on a PUB socket as three frames: topic, 8-byte big-endian sequence number,
msgpack `EventBatch`. A subscriber that sees a gap in the numbers asks the optional ROUTER
socket to replay from a sequence number: it gets every buffered batch from there, as
(topic, seq, payload) after its identity and an empty frame, then an end marker whose
sequence number is -1.

The engine step only numbers the batch and puts it on a bounded queue; encoding and sending
happen on the publisher thread, which alone touches the sockets. When the queue is full the
batch is dropped (logged): its number is spent, so subscribers see the gap and can replay
what the buffer still holds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

import msgspec
import zmq
from triage_router.policies.kv_events import END_OF_REPLAY, EventBatch, KVEvent, sequence_bytes

from triage_router.engine_server.config import KVEventsConfig

log = logging.getLogger("engine_server")

# How often an idle publisher thread looks at the replay socket and for shutdown.
_POLL_S = 0.05
# How long close() lets queued batches and unsent messages go out.
_DRAIN_S = 2.0


def is_bind_endpoint(endpoint: str) -> bool:
    """vLLM's rule: wildcard hosts and ipc/inproc addresses are bound, anything else connected to."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class ZmqEventPublisher:
    def __init__(self, config: KVEventsConfig, data_parallel_rank: int = 0) -> None:
        self._topic = config.topic.encode()
        self._rank = data_parallel_rank
        self._queue: queue.Queue[tuple[int, EventBatch]] = queue.Queue(maxsize=config.max_queue_size)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=config.buffer_steps)
        self._next_seq = 0
        self._dropped = 0
        self._closing = threading.Event()
        # Sockets are made and bound here so that a bad or busy address fails at start-up;
        # from then on only the publisher thread uses them.
        self._ctx = zmq.Context()
        self._replay: zmq.Socket | None = None
        self.replay_endpoint: str | None = None
        try:
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.SNDHWM, config.hwm)
            self._pub.setsockopt(zmq.LINGER, int(_DRAIN_S * 1000))
            self.endpoint = self._attach(self._pub, config.endpoint, bind=is_bind_endpoint(config.endpoint))
            if config.replay_endpoint:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.setsockopt(zmq.LINGER, 0)
                self.replay_endpoint = self._attach(self._replay, config.replay_endpoint, bind=True)
        except ValueError:
            self._ctx.destroy(linger=0)
            raise
        self._failed = False
        self._encoder = msgspec.msgpack.Encoder()  # the publisher thread's
        self._thread = threading.Thread(target=self._run, name="kv-event-publisher", daemon=True)
        self._thread.start()

    @staticmethod
    def _attach(sock: zmq.Socket, endpoint: str, *, bind: bool) -> str:
        """Bind or connect; return the address subscribers reach (the real port for port 0)."""
        try:
            if not bind:
                sock.connect(endpoint)
                return endpoint
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            raise ValueError(f"KV-cache events: cannot {'bind' if bind else 'connect to'} {endpoint}: {e.strerror}") from e
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def num_batches(self) -> int:
        """Sequence numbers spent: batches sent, queued or dropped."""
        return self._next_seq

    @property
    def dropped(self) -> int:
        """Batches dropped because the queue was full."""
        return self._dropped

    def publish(self, events: list[KVEvent]) -> None:
        """Queue one step's events. Never blocks: a full queue drops the batch, leaving a gap."""
        if self._failed:
            return
        seq = self._next_seq
        self._next_seq += 1
        try:
            self._queue.put_nowait((seq, EventBatch(time.time(), events, data_parallel_rank=self._rank)))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:  # a stalled publisher must not flood the log
                log.warning("KV-cache event queue full: dropped batch %d (%d dropped so far)", seq, self._dropped)

    def close(self) -> None:
        """Send what is queued (within a bound), then close the sockets."""
        self._closing.set()
        self._thread.join(timeout=_DRAIN_S * 2)
        if self._thread.is_alive():
            log.warning("KV-cache event publisher did not stop in time")
            return
        self._ctx.term()

    def _run(self) -> None:
        try:
            while not (self._closing.is_set() and self._queue.empty()):
                if self._replay is not None and self._replay.poll(0):
                    self._serve_replays()
                try:
                    self._send(*self._queue.get(timeout=_POLL_S))
                except queue.Empty:
                    continue
        except Exception:  # a dead publisher must not go unnoticed, but must not kill the engine
            self._failed = True
            log.exception("KV-cache event publisher failed; no more events will be sent")
        finally:
            self._pub.close()
            if self._replay is not None:
                self._replay.close()

    def _send(self, seq: int, batch: EventBatch) -> None:
        payload = self._encoder.encode(batch)
        # PUB never blocks: past the high-water mark ZeroMQ drops for slow subscribers.
        self._pub.send_multipart((self._topic, sequence_bytes(seq), payload))
        self._buffer.append((seq, payload))

    def _serve_replays(self) -> None:
        assert self._replay is not None
        # Send what is queued first: a replay holds every batch published before it was asked for.
        while not self._queue.empty():
            self._send(*self._queue.get_nowait())
        while self._replay.poll(0):
            frames = self._replay.recv_multipart()
            if len(frames) != 3 or len(frames[2]) != 8:
                log.warning("ignored a malformed KV-cache event replay request (%d frames)", len(frames))
                continue
            identity, _, start = frames
            start_seq = int.from_bytes(start, "big")
            for seq, payload in self._buffer:
                if seq >= start_seq:
                    self._replay.send_multipart((identity, b"", self._topic, sequence_bytes(seq), payload))
            self._replay.send_multipart((identity, b"", b"", END_OF_REPLAY, b""))
