"""The subscriber against a real ZeroMQ publisher (tests/fakes/kv_event_publisher.py)."""

import asyncio
import time

import pytest

from tests.fakes.kv_event_publisher import FakeKVEventPublisher
from triage_router.policies.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from triage_router.router.routing.kv_events.block_hashes import pack_tokens, prefix_hashes
from triage_router.router.routing.kv_events.block_index import KVBlockIndex
from triage_router.router.routing.kv_events.subscriber import KVEventSubscriber

PROMPT = list(range(100, 112))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stored(hashes, parent, tokens):
    return BlockStored(list(hashes), parent, list(tokens), 4, None, "GPU", None)


def matched(index: KVBlockIndex, tokens=PROMPT) -> int:
    return index.match(prefix_hashes(pack_tokens(tokens), 4, 100))


class Running:
    """A subscriber running as a task, with its outcomes recorded."""

    def __init__(self, publisher: FakeKVEventPublisher, replay: bool = True, rewarm_s: float = 30.0) -> None:
        self.index = KVBlockIndex()
        self.outcomes: list[str] = []
        self.subscriber = KVEventSubscriber(
            "a", publisher.endpoint, self.index, replay_endpoint=publisher.replay_endpoint if replay else None,
            rewarm_s=rewarm_s, on_batch=self.outcomes.append)
        self.task = asyncio.ensure_future(self.subscriber.run())

    async def until(self, condition, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; outcomes {self.outcomes}"
            await asyncio.sleep(0.01)

    async def connected(self, publisher: FakeKVEventPublisher) -> None:
        """ZeroMQ drops what a PUB sends before the SUB has joined: probe until one arrives."""
        deadline = time.monotonic() + 5
        while not self.outcomes:
            assert time.monotonic() < deadline
            publisher.publish()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def publisher():
    found = FakeKVEventPublisher()
    yield found
    found.close()


@pytest.mark.anyio
async def test_follows_stores_and_removals(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    publisher.publish(stored([1, 2, 3], None, PROMPT))
    await running.until(lambda: matched(running.index) == 3)
    publisher.publish(BlockRemoved([3], "GPU"))
    await running.until(lambda: matched(running.index) == 2)
    publisher.publish(AllBlocksCleared())
    await running.until(lambda: len(running.index) == 0)
    assert running.subscriber.sure(time.monotonic())
    await running.stop()


@pytest.mark.anyio
async def test_a_gap_is_filled_from_the_replay_buffer(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    publisher.publish(stored([1], None, PROMPT[:4]), send=False)  # missed
    publisher.publish(stored([2, 3], 1, PROMPT[4:]))
    await running.until(lambda: matched(running.index) == 3)
    assert "gap" in running.outcomes and "replayed" in running.outcomes and "lost" not in running.outcomes
    assert running.subscriber.sure(time.monotonic())
    await running.stop()


@pytest.mark.anyio
async def test_a_gap_beyond_the_buffer_leaves_the_index_unsure(publisher):
    running = Running(publisher, rewarm_s=60)
    await running.connected(publisher)
    publisher.publish(stored([1], None, PROMPT[:4]), send=False)
    publisher.buffer.clear()  # the publisher's buffer wrapped past it
    publisher.publish(stored([5], None, [9, 9, 9, 9]))
    await running.until(lambda: "lost" in running.outcomes and "applied" in running.outcomes[-2:])
    assert not running.subscriber.sure(time.monotonic())
    assert running.subscriber.state == "unsure"
    assert len(running.index) == 1  # later events still apply
    assert running.subscriber.sure(time.monotonic() + 61)
    await running.stop()


@pytest.mark.anyio
async def test_without_a_replay_endpoint_a_gap_leaves_it_unsure(publisher):
    running = Running(publisher, replay=False)
    await running.connected(publisher)
    publisher.publish(send=False)
    publisher.publish()
    await running.until(lambda: "lost" in running.outcomes)
    assert not running.subscriber.sure(time.monotonic())
    await running.stop()


@pytest.mark.anyio
async def test_joining_late_replays_from_the_start(publisher):
    publisher.publish(stored([1], None, PROMPT[:4]), send=False)  # before anyone subscribed
    running = Running(publisher)
    await running.connected(publisher)
    publisher.publish(stored([2, 3], 1, PROMPT[4:]))
    await running.until(lambda: matched(running.index) == 3)
    assert publisher.replays[0] == 0 and running.subscriber.sure(time.monotonic())
    await running.stop()


@pytest.mark.anyio
async def test_duplicates_are_dropped(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    seq = publisher.publish(stored([1, 2, 3], None, PROMPT))
    publisher.publish(BlockRemoved([3], "GPU"))
    await running.until(lambda: matched(running.index) == 2)
    publisher.resend(seq)  # the store again: must not bring block 3 back
    publisher.publish()
    await running.until(lambda: "duplicate" in running.outcomes and running.outcomes[-1] == "applied")
    assert matched(running.index) == 2
    await running.stop()


@pytest.mark.anyio
async def test_a_restarted_publisher_clears_the_index(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    publisher.publish(stored([1, 2, 3], None, PROMPT))
    await running.until(lambda: matched(running.index) == 3)
    publisher.restart()
    publisher.publish(stored([7], None, [5, 5, 5, 5]), ts=time.time() + 1)
    await running.until(lambda: "restart" in running.outcomes and running.outcomes[-1] == "applied")
    assert matched(running.index) == 0 and len(running.index) == 1
    assert running.subscriber.sure(time.monotonic())
    await running.stop()


@pytest.mark.anyio
async def test_malformed_messages_are_skipped(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    publisher.send_raw(b"", b"\x00" * 8, b"\xc1 not msgpack")
    publisher.send_raw(b"only two", b"frames")
    publisher.publish(stored([1, 2, 3], None, PROMPT))
    await running.until(lambda: matched(running.index) == 3)
    assert running.outcomes.count("lost") == 2
    await running.stop()


@pytest.mark.anyio
async def test_an_unknown_event_kind_is_skipped_alone(publisher):
    import msgspec

    running = Running(publisher)
    await running.connected(publisher)
    seq = publisher.next_seq
    publisher.next_seq += 1
    known = msgspec.msgpack.encode(stored([1, 2, 3], None, PROMPT))
    payload = msgspec.msgpack.encode([time.time(), [msgspec.Raw(msgspec.msgpack.encode({"type": "BlockPinned"})),
                                                   msgspec.Raw(known)], 0])
    publisher.send_raw(b"", seq.to_bytes(8, "big"), payload)
    await running.until(lambda: matched(running.index) == 3)
    assert "skipped_event" in running.outcomes and "lost" not in running.outcomes
    await running.stop()


@pytest.mark.anyio
async def test_a_restart_seen_in_the_backends_counters_clears_the_index_once(publisher):
    running = Running(publisher)
    await running.connected(publisher)
    publisher.publish(stored([1, 2, 3], None, PROMPT))
    await running.until(lambda: matched(running.index) == 3)
    running.subscriber.backend_restarted()  # before the new process published anything
    assert len(running.index) == 0 and running.subscriber.state == "cold"
    # The new stream begins; its restart was already seen, so the counters saying so too
    # (a scrape later) must not drop what it has stored since.
    publisher.restart()
    publisher.publish(stored([7, 8, 9], None, PROMPT), ts=time.time() + 1)
    await running.until(lambda: matched(running.index) == 3)
    publisher.publish(stored([4], None, [1, 1, 1, 1]), ts=time.time() + 2)
    publisher.restart()
    publisher.publish(stored([5, 6, 7], None, PROMPT), ts=time.time() + 3)
    await running.until(lambda: "restart" in running.outcomes and running.outcomes[-1] == "applied")
    running.subscriber.backend_restarted()
    assert matched(running.index) == 3
    await running.stop()


@pytest.mark.anyio
async def test_out_of_order_messages_apply_once_in_sequence_order(publisher):
    """5 arrives before 4: the replay applies 4 then 5 in order, and the late 4 is dropped."""
    running = Running(publisher)
    await running.connected(publisher)
    late = publisher.publish(stored([1], None, PROMPT[:4]), send=False)
    publisher.publish(BlockRemoved([1], "GPU"))  # after the store, in sequence order
    await running.until(lambda: running.outcomes[-1] == "applied")
    publisher.resend(late)
    publisher.publish()
    await running.until(lambda: "duplicate" in running.outcomes and running.outcomes[-1] == "applied")
    assert len(running.index) == 0  # the store did not come back after its removal
    await running.stop()


@pytest.mark.anyio
async def test_on_joining_it_reads_the_replay_buffer_without_waiting_for_news(publisher):
    quiet = FakeKVEventPublisher()
    try:
        idle = Running(quiet)  # a publisher that has published nothing: an empty, exact index
        await idle.until(lambda: idle.subscriber.state == "sure")
        await idle.stop()
    finally:
        quiet.close()
    publisher.publish(stored([1, 2, 3], None, PROMPT), send=False)  # before anyone subscribed
    running = Running(publisher)
    await running.until(lambda: matched(running.index) == 3)
    assert running.subscriber.state == "sure" and running.outcomes == ["replayed"]
    await running.stop()


@pytest.mark.anyio
async def test_joining_after_the_buffer_lost_the_beginning_is_unsure(publisher):
    publisher.publish(stored([1], None, PROMPT[:4]), send=False)
    publisher.buffer.pop(0)
    publisher.publish(stored([7], None, [9, 9, 9, 9]), send=False)
    running = Running(publisher)
    await running.until(lambda: "lost" in running.outcomes)
    assert running.subscriber.state == "unsure" and len(running.index) == 1
    await running.stop()
