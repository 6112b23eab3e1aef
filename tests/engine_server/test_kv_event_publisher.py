"""KV-cache events from a running engine, read by real ZeroMQ SUB and DEALER sockets."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import msgspec
import pytest
import zmq
from litestar.testing import TestClient

from triage_router.engine_server.__main__ import parse_args
from triage_router.engine_server.block_pool import block_hash
from triage_router.engine_server.config import KVEventsConfig
from triage_router.engine_server.engine import LLMEngine
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.http.app import create_app
from triage_router.engine_server.kv_event_log import external_hash
from triage_router.engine_server.kv_event_publisher import ZmqEventPublisher
from triage_router.engine_server.sequence import SamplingParams
from triage_router.policies.kv_events import (
    END_OF_REPLAY, AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, sequence_bytes,
)
from tests.engine_server.conftest import tiny_engine

BS = 4
TOPIC = "kv@engine"
WAIT_MS = 10_000  # the most any one batch may take to arrive before the test fails
Batch = tuple[int, EventBatch]


def config(**overrides) -> KVEventsConfig:
    base = {"enable_kv_cache_events": True, "endpoint": "tcp://*:0", "replay_endpoint": "tcp://*:0", "topic": TOPIC}
    return KVEventsConfig(**(base | overrides))


def local(endpoint: str) -> str:
    """Where a subscriber reaches an endpoint bound on every interface."""
    return endpoint.replace("0.0.0.0", "127.0.0.1")


def decode(frames: list[bytes]) -> Batch:
    topic, seq, payload = frames
    assert topic == TOPIC.encode()
    return int.from_bytes(seq, "big"), msgspec.msgpack.decode(payload, type=EventBatch)


class Subscriber:
    """A SUB socket on the engine's publisher that knows how many batches to expect."""

    def __init__(self, ctx: zmq.Context, publisher: ZmqEventPublisher) -> None:
        self.publisher = publisher
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        self.sock.connect(local(publisher.endpoint))
        self.next_seq = 0

    def until_caught_up(self) -> list[Batch]:
        """The batches not read yet, up to the last one numbered so far."""
        out: list[Batch] = []
        while self.next_seq < self.publisher.num_batches:
            assert self.sock.poll(WAIT_MS), f"KV event batch {self.next_seq} never arrived"
            out.append(decode(self.sock.recv_multipart()))
            self.next_seq = out[-1][0] + 1
        return out

    def sync(self, engine: LLMEngine) -> None:
        """PUB drops messages until the subscription reaches it: cache distinct one-block
        prompts until a batch arrives; from then on nothing is missed."""
        for i in itertools.count():
            assert i < 1000, "the subscription never reached the publisher"
            engine.generate([[60 + i % 30, i // 30, 92, 93, 1]], greedy(1))
            if self.sock.poll(20):
                self.until_caught_up()
                return


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


def chain(tokens: list[int]) -> list[int]:
    hashes: list[int] = []
    for i in range(len(tokens) // BS):
        hashes.append(block_hash(hashes[-1] if hashes else None, tokens[i * BS:(i + 1) * BS]))
    return [external_hash(h) for h in hashes]


def events(batches: list[Batch]) -> list:
    return [e for _, b in batches for e in b.events]


def stored(batches: list[Batch]) -> list[BlockStored]:
    return [e for e in events(batches) if isinstance(e, BlockStored)]


def replay(ctx: zmq.Context, endpoint: str, start: int) -> list[Batch]:
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(local(endpoint))
    dealer.send_multipart((b"", sequence_bytes(start)))
    out = []
    while True:
        assert dealer.poll(WAIT_MS), "the replay did not finish"
        empty, *frames = dealer.recv_multipart()
        assert empty == b""
        if frames[1] == END_OF_REPLAY:
            assert frames == [b"", END_OF_REPLAY, b""]
            return out
        out.append(decode(frames))


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def engine(tiny_llama) -> Iterator[LLMEngine]:
    engine = tiny_engine(tiny_llama, block_size=BS, num_gpu_blocks=12, num_swap_blocks=0, kv_events=config())
    yield engine
    engine.close()


@pytest.fixture
def sub(ctx, engine) -> Subscriber:
    assert engine.kv_event_publisher is not None
    s = Subscriber(ctx, engine.kv_event_publisher)
    s.sync(engine)
    return s


def test_a_prompt_stores_its_full_blocks_and_a_shared_prefix_stores_only_new_ones(engine, sub):
    prompt = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]  # two full blocks and two tokens
    engine.generate([prompt], greedy(1))
    (first,) = stored(sub.until_caught_up())  # (the sync prompts' blocks may be evicted too)
    assert first == BlockStored(
        block_hashes=chain(prompt), parent_block_hash=None, token_ids=prompt[:8], block_size=BS,
        lora_id=None, medium="GPU", lora_name=None, extra_keys=[None, None], group_idx=0,
    )
    longer = prompt[:8] + [40, 41, 42, 43, 44]
    engine.generate([longer], greedy(1))
    (second,) = stored(sub.until_caught_up())
    assert second.block_hashes == chain(longer)[2:] and second.token_ids == [40, 41, 42, 43]
    assert second.parent_block_hash == chain(prompt)[1]


def test_decoded_tokens_that_fill_a_block_are_stored_too(engine, sub):
    prompt = [20, 21, 22, 23, 24, 25]
    (output,) = engine.generate([prompt], greedy(4))
    first, second = stored(sub.until_caught_up())
    # The last sampled token is never computed, so 9 of the 10 tokens have KV: two full blocks,
    # the prompt's at prefill and the next when the second decode step fills it.
    full = prompt + output
    assert first.block_hashes + second.block_hashes == chain(full[:8])
    assert first.token_ids + second.token_ids == full[:8]
    assert second.parent_block_hash == first.block_hashes[0]


def test_reusing_cached_blocks_removes_them(ctx, engine, sub):
    # The sync prompts' blocks, from the start: the subscription missed the first batches.
    assert engine.kv_event_publisher is not None and engine.kv_event_publisher.replay_endpoint is not None
    before = events(replay(ctx, engine.kv_event_publisher.replay_endpoint, 0))
    engine.generate([list(range(10, 57))], greedy(1))  # all 12 blocks: every cached one goes
    batches = sub.until_caught_up()
    removed = [h for e in events(batches) if isinstance(e, BlockRemoved) for h in e.block_hashes]
    stored_before = [h for e in before if isinstance(e, BlockStored) for h in e.block_hashes]
    removed_before = [h for e in before if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert sorted(removed) == sorted(set(stored_before) - set(removed_before))
    # Eviction happens when blocks are handed out, before the new ones are computed and stored.
    kinds = [type(e) for e in events(batches)]
    assert kinds.index(BlockRemoved) < kinds.index(BlockStored)


def test_a_prefix_cache_reset_clears_all_but_not_while_blocks_are_held(engine, sub):
    engine.add_request("busy", [70, 71, 72, 73, 74], greedy(3))
    engine.step()
    sub.until_caught_up()
    assert not engine.reset_prefix_cache()
    assert sub.until_caught_up() == []
    while engine.has_work():
        engine.step()
    sub.until_caught_up()
    assert engine.reset_prefix_cache()
    assert events(sub.until_caught_up()) == [AllBlocksCleared()]


def test_the_servers_reset_route_clears_the_cache_as_vllms_does_in_dev_mode_only(engine, sub):
    with TestClient(create_app(EngineClient.in_thread(engine), model_name="tiny", embedder=None)) as client:
        r = client.post("/reset_prefix_cache")
        assert r.status_code == 404 and "error" in r.json()
    with TestClient(create_app(EngineClient.in_thread(engine), model_name="tiny", embedder=None,
                               dev_routes=True)) as client:
        r = client.post("/reset_prefix_cache")
        assert r.status_code == 200 and r.json() == {"success": True}
    assert events(sub.until_caught_up()) == [AllBlocksCleared()]


def test_batches_are_numbered_consecutively_and_replayed_from_any_start(ctx, engine, sub):
    for i in range(4):  # one step each, storing one new block
        engine.generate([[30 + i, 31, 32, 33, 34]], greedy(1))
    live = sub.until_caught_up()
    seqs = [seq for seq, _ in live]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) >= 4

    assert engine.kv_event_publisher is not None and engine.kv_event_publisher.replay_endpoint is not None
    replayed = replay(ctx, engine.kv_event_publisher.replay_endpoint, seqs[1])
    assert [seq for seq, _ in replayed] == seqs[1:]
    assert [b.events for _, b in replayed] == [b.events for _, b in live[1:]]


def test_a_full_queue_drops_batches_and_leaves_gaps(ctx):
    publisher = ZmqEventPublisher(config(replay_endpoint=None, max_queue_size=1))
    try:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(local(publisher.endpoint))
        while True:  # as in Subscriber.sync: wait for the subscription to take
            publisher.publish([AllBlocksCleared()])
            if sock.poll(20):
                break
        while decode(sock.recv_multipart())[0] < publisher.num_batches - 1:
            assert sock.poll(WAIT_MS)
        first = publisher.num_batches
        dropped_before = publisher.dropped
        # Far faster than the thread sends: the thread needs the GIL, which this loop holds for
        # a whole switch interval, so the queue of one overflows.
        for _ in range(2000):
            publisher.publish([AllBlocksCleared()])
        dropped = publisher.dropped - dropped_before
        assert dropped > 0
        seqs = []
        for _ in range(2000 - dropped):
            assert sock.poll(WAIT_MS), "a queued batch never arrived"
            seqs.append(decode(sock.recv_multipart())[0])
        # Every batch is numbered; the dropped ones are the gaps.
        assert seqs == sorted(set(seqs)) and first <= seqs[0] and seqs[-1] < first + 2000
    finally:
        publisher.close()


def test_a_disabled_config_publishes_nothing(tiny_llama):
    for cfg in (KVEventsConfig.parse('{"enable_kv_cache_events": false}'),
                KVEventsConfig.parse('{"enable_kv_cache_events": true, "publisher": "null"}')):
        engine = tiny_engine(tiny_llama, block_size=BS, num_gpu_blocks=12, kv_events=cfg)
        assert engine.kv_event_publisher is None and engine.kv.events is None


def test_the_cli_takes_vllms_json_and_rejects_bad_config(capsys):
    vllms = ('{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557", '
             '"replay_endpoint": "tcp://*:5558", "topic": "", "buffer_steps": 10000, "hwm": 100000}')
    args = parse_args(["--kv-events-config", vllms])
    assert args.kv_events_config == KVEventsConfig(
        enable_kv_cache_events=True, publisher="zmq", replay_endpoint="tcp://*:5558",
    )
    assert KVEventsConfig.parse('{"enable_kv_cache_events": true}').publisher == "zmq"
    for bad, reason in [("{not json", "not a valid KV events config"), ('{"publisher": "kafka"}', "unknown KV events publisher"),
                        ('{"enable": true}', "unknown field `enable`"), ('{"max_queue_size": 0}', "max_queue_size")]:
        with pytest.raises(SystemExit):
            parse_args(["--kv-events-config", bad])
        assert reason in capsys.readouterr().err


def test_a_closed_engine_frees_its_endpoints(tiny_llama):
    engine = tiny_engine(tiny_llama, block_size=BS, num_gpu_blocks=12, kv_events=config())
    assert engine.kv_event_publisher is not None and engine.kv_event_publisher.replay_endpoint is not None
    endpoints = [e.replace("0.0.0.0", "*") for e in (engine.kv_event_publisher.endpoint, engine.kv_event_publisher.replay_endpoint)]
    engine.close()
    assert engine.kv_event_publisher is None
    ZmqEventPublisher(config(endpoint=endpoints[0], replay_endpoint=endpoints[1])).close()


def test_an_endpoint_in_use_is_a_startup_error():
    first = ZmqEventPublisher(config(replay_endpoint=None))
    try:
        taken = first.endpoint.replace("0.0.0.0", "*")
        with pytest.raises(ValueError, match=re.escape(f"cannot bind {taken}")):
            ZmqEventPublisher(config(endpoint=taken, replay_endpoint=None))
    finally:
        first.close()
