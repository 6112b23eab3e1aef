"""KVEventSubscriber: follows one backend's KV-event stream into its block index.

Sequence numbers say when something was missed. On subscribing, and on a gap, the subscriber
asks the publisher's replay socket for what it still buffers, so that a replica started late
knows at once what an idle backend holds. What cannot be
recovered leaves the index *unsure* for `rewarm_s`: the dispatcher then routes that backend by its
approximate index (what this router sent there). The index keeps its blocks, since a block the
backend dropped during a gap costs one miss, after which the backend stores it again and says so,
while forgetting the blocks it still holds (system prompts, hit again and again) would misroute
for as long as they stay cached.

A stream that starts again from a lower sequence number with a later timestamp is a restarted
publisher, so a restarted backend with an empty cache: the index is cleared. A lower number with
an earlier timestamp is a duplicate and is dropped. A message that does not decode is logged and
skipped (the index turns unsure: its events are lost); an event of a kind this router does not
know is skipped alone, so a newer vLLM adding one does not stop the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
import msgspec
import zmq
import zmq.asyncio

from triage_router.policies.kv_events import END_OF_REPLAY, KVEvent, sequence_bytes
from triage_router.router.routing.kv_events.block_index import KVBlockIndex

log = logging.getLogger("triage.kv_events")

# How long one replay may take before what it sent is all we get.
REPLAY_TIMEOUT_S = 2.0
# A restart the backend's /metrics reveals this soon after the stream showed it is the same one.
RESTART_SEEN_S = 10.0


class _RawBatch(msgspec.Struct, array_like=True):
    """A batch with its events left encoded, so that one bad or unknown event costs only itself."""

    ts: float
    events: list[msgspec.Raw]
    data_parallel_rank: int | None = None


_decode_batch = msgspec.msgpack.Decoder(_RawBatch).decode
_decode_event = msgspec.msgpack.Decoder(KVEvent).decode


class KVEventSubscriber:
    def __init__(
        self,
        backend: str,
        endpoint: str,
        index: KVBlockIndex,
        *,
        replay_endpoint: str | None = None,
        topic: str = "",
        rewarm_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.topic = topic.encode()
        self.index = index
        self.rewarm_s = rewarm_s
        self.clock = clock
        # Called with each message's outcome: applied, replayed, duplicate, malformed, restart, gap.
        self.on_batch = on_batch
        self.next_seq: int | None = None  # None until the first message
        self.last_ts = float("-inf")
        self.unsure_until = 0.0
        # When the current stream began (a restart seen in the sequence numbers), on `clock`.
        self.stream_began = float("-inf")
        self._context = zmq.asyncio.Context.instance()

    def sure(self, now: float) -> bool:
        """Whether the index can be trusted now: the stream has begun and nothing is missing."""
        return self.next_seq is not None and now >= self.unsure_until

    @property
    def trusted(self) -> bool:
        return self.sure(self.clock())

    @property
    def state(self) -> str:
        if self.next_seq is None:
            return "cold"
        return "sure" if self.trusted else "unsure"

    def backend_restarted(self) -> None:
        """The backend's counters say it restarted, so its cache is empty, whether or not its new
        stream has begun: clear the index, unless that new stream already did (and has since
        told us what the new process stored)."""
        if self.clock() - self.stream_began > RESTART_SEEN_S:
            self.index.clear()
            self.next_seq = None

    async def run(self) -> None:
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.SUBSCRIBE, self.topic)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.endpoint)
        log.info("kv events: %s subscribed to %s", self.backend, self.endpoint)
        try:
            if self.replay_endpoint:
                await self._join()
            while True:
                await self.receive(await socket.recv_multipart())
        finally:
            socket.close()

    async def receive(self, frames: list[bytes]) -> None:
        """One message from the stream."""
        decoded = self._decode(frames)
        if decoded is None:
            self._lost("a malformed message")
            if self.next_seq is not None and len(frames) == 3 and len(frames[1]) == 8:
                self.next_seq = max(self.next_seq, int.from_bytes(frames[1], "big") + 1)
            return
        seq, batch = decoded
        if self.next_seq is not None and seq < self.next_seq:
            if batch.ts <= self.last_ts:
                self.on_batch("duplicate")
                return
            log.warning("kv events: %s restarted its stream (sequence %d after %d): clearing its index",
                        self.backend, seq, self.next_seq - 1)
            self.on_batch("restart")
            self.index.clear()
            self.next_seq = None
            self.stream_began = self.clock()
        if self.next_seq is None and seq > 0:
            await self._recover(0, seq, "joined a stream already under way")
        elif self.next_seq is not None and seq > self.next_seq:
            self.on_batch("gap")
            await self._recover(self.next_seq, seq, f"missed sequence {self.next_seq}..{seq - 1}")
        self._apply(seq, batch, "applied")

    def _decode(self, frames: list[bytes]) -> tuple[int, _RawBatch] | None:
        if len(frames) != 3 or len(frames[1]) != 8:
            return None
        try:
            return int.from_bytes(frames[1], "big"), _decode_batch(frames[2])
        except msgspec.DecodeError:
            return None

    def _apply(self, seq: int, batch: _RawBatch, outcome: str) -> None:
        for raw in batch.events:
            try:
                event = _decode_event(raw)
            except msgspec.DecodeError as error:
                log.debug("kv events: %s sent an event this router does not read: %s", self.backend, error)
                self.on_batch("skipped_event")
                continue
            self.index.apply(event)
        self.next_seq = seq + 1
        self.last_ts = max(self.last_ts, batch.ts)
        self.on_batch(outcome)

    async def _join(self) -> None:
        """Read the publisher's whole buffer on subscribing: a quiet publisher would otherwise
        leave the index cold until its next batch. An empty buffer from a live publisher means
        it has published nothing yet: the index (empty) is exact."""
        answered, complete = await self._replay(0, None)
        if not answered:
            return  # not up yet: the stream's first message will start it
        if self.next_seq is None:
            self.next_seq = 0
        elif not complete:
            self._lost("joined a stream whose replay buffer no longer holds its beginning")

    async def _recover(self, start: int, until: int, why: str) -> None:
        """Replay [start, until) from the publisher's buffer; unsure unless all of it came."""
        if not self.replay_endpoint:
            self._lost(f"{why}, and it has no replay endpoint")
        elif not (await self._replay(start, until))[1]:
            self._lost(f"{why}, and its replay buffer no longer holds all of it")

    async def _replay(self, start: int, until: int | None) -> tuple[bool, bool]:
        """Apply, in order, what the replay socket still has of [start, until) (until None: all
        it has). Whether it answered to the end, and whether what came began at `start` with no
        hole (and, given `until`, reached it)."""
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.replay_endpoint)  # type: ignore[arg-type]
        expected, complete, answered = start, True, False
        deadline = self.clock() + REPLAY_TIMEOUT_S
        try:
            await socket.send_multipart((b"", sequence_bytes(start)))
            # Each answer is (empty, topic, sequence, payload); the last has END_OF_REPLAY.
            while (left := deadline - self.clock()) > 0 and await socket.poll(left * 1000):
                frames = await socket.recv_multipart()
                if len(frames) == 4 and frames[2] == END_OF_REPLAY:
                    answered = True
                    break
                decoded = self._decode(frames[1:]) if len(frames) == 4 else None
                if decoded is None or decoded[0] < expected or (until is not None and decoded[0] >= until):
                    continue
                seq, batch = decoded
                complete = complete and seq == expected
                self._apply(seq, batch, "replayed")
                expected = seq + 1
        finally:
            socket.close()
        return answered, complete and (until is None or expected == until)

    def _lost(self, why: str) -> None:
        self.unsure_until = self.clock() + self.rewarm_s
        log.warning("kv events: %s: %s; routing it by the approximate index for %.0f s",
                    self.backend, why, self.rewarm_s)
        self.on_batch("lost")

