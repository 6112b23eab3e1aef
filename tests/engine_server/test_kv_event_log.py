"""The block pool's KV-cache events, collected without any socket."""

from __future__ import annotations

from triage_router.engine_server.block_pool import BlockPool, block_hash
from triage_router.engine_server.kv_event_log import KVEventLog, external_hash
from triage_router.policies.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

BS = 2


def chain(tokens: list[int]) -> list[int]:
    """The chained hashes of the full blocks of `tokens`."""
    hashes: list[int] = []
    for i in range(len(tokens) // BS):
        hashes.append(block_hash(hashes[-1] if hashes else None, tokens[i * BS:(i + 1) * BS]))
    return hashes


def cache_all(pool: BlockPool, tokens: list[int], start: int = 0) -> list:
    """Allocate and cache blocks for the full blocks of `tokens` from block `start` on."""
    hashes = chain(tokens)
    blocks = pool.allocate(len(hashes) - start)
    for i, block in zip(range(start, len(hashes)), blocks):
        pool.cache(block, hashes[i], tokens[i * BS:(i + 1) * BS], hashes[i - 1] if i else None)
    return blocks


def test_a_chain_of_new_blocks_is_one_stored_event_in_order():
    log = KVEventLog(BS)
    pool = BlockPool(4, events=log)
    tokens = [5, 6, 7, 8, 9, 10]
    cache_all(pool, tokens)
    (event,) = log.take()
    assert event == BlockStored(
        block_hashes=[external_hash(h) for h in chain(tokens)], parent_block_hash=None, token_ids=tokens,
        block_size=BS, lora_id=None, medium="GPU", lora_name=None, extra_keys=[None] * 3, group_idx=0,
    )
    assert log.take() == []


def test_blocks_continuing_a_cached_prefix_name_its_last_block_as_parent():
    log = KVEventLog(BS)
    pool = BlockPool(4, events=log)
    tokens = [5, 6, 7, 8]
    cache_all(pool, tokens)
    log.take()
    longer = tokens + [1, 2, 3, 4]
    cache_all(pool, longer, start=2)
    (event,) = log.take()
    assert isinstance(event, BlockStored)
    assert event.parent_block_hash == external_hash(chain(tokens)[-1])
    assert event.block_hashes == [external_hash(h) for h in chain(longer)[2:]]
    assert event.token_ids == [1, 2, 3, 4]


def test_content_already_cached_is_not_stored_twice():
    log = KVEventLog(BS)
    pool = BlockPool(4, events=log)
    cache_all(pool, [5, 6, 7, 8])
    log.take()
    cache_all(pool, [5, 6, 7, 8])  # a second sequence computed the same blocks concurrently
    assert log.take() == []


def test_hashes_are_published_as_unsigned_64_bit_ints():
    assert external_hash(-1) == 2**64 - 1 and external_hash(5) == 5
    log = KVEventLog(BS)
    log.stored(-2, -3, [1, 2])
    (event,) = log.take()
    assert event.block_hashes == [2**64 - 2] and event.parent_block_hash == 2**64 - 3


def test_release_says_nothing_and_reuse_of_a_cached_block_removes_it():
    log = KVEventLog(BS)
    pool = BlockPool(2, events=log)
    tokens = [5, 6, 7, 8]
    blocks = cache_all(pool, tokens)
    log.take()
    pool.release(blocks)
    assert log.take() == []  # freed but still cached: a later prefix can take it back
    pool.allocate(1)  # the tail goes first
    assert log.take() == [BlockRemoved(block_hashes=[external_hash(chain(tokens)[1])], medium="GPU", group_idx=0)]
    pool.allocate(1)
    assert log.take() == [BlockRemoved(block_hashes=[external_hash(chain(tokens)[0])], medium="GPU", group_idx=0)]


def test_allocating_never_cached_blocks_removes_nothing():
    log = KVEventLog(BS)
    pool = BlockPool(3, events=log)
    pool.release(pool.allocate(3))
    pool.allocate(3)
    assert log.take() == []


def test_a_reset_clears_all_and_a_refused_one_says_nothing():
    log = KVEventLog(BS)
    pool = BlockPool(2, events=log)
    blocks = cache_all(pool, [5, 6])
    log.take()
    assert not pool.reset_prefix_cache()  # a block is in use
    assert log.take() == []
    pool.release(blocks)
    assert pool.reset_prefix_cache()
    assert log.take() == [AllBlocksCleared()]


def test_without_prefix_caching_nothing_is_stored():
    log = KVEventLog(BS)
    pool = BlockPool(2, enable_caching=False, events=log)
    cache_all(pool, [5, 6, 7, 8])
    assert log.take() == []
