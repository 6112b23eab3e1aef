from __future__ import annotations

import pytest

from triage_router.engine_server.block_pool import BlockPool, block_hash


def test_allocate_and_release_track_free_blocks():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert pool.num_free == 1 and all(b.ref_count == 1 for b in blocks)
    with pytest.raises(RuntimeError):
        pool.allocate(2)
    pool.release(blocks)
    assert pool.num_free == 4 and pool.usage() == 0.0


def test_chained_hash_depends_on_every_earlier_token():
    a = block_hash(block_hash(None, [1, 2]), [3, 4])
    b = block_hash(block_hash(None, [9, 2]), [3, 4])
    assert a != b
    assert a == block_hash(block_hash(None, [1, 2]), [3, 4])


def test_freed_cached_block_is_reusable_until_evicted():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    h = block_hash(None, [1, 2])
    pool.cache(block, h, [1, 2], None)
    pool.release([block])
    assert pool.num_free == 2
    hit = pool.lookup(h, [1, 2])
    assert hit is block
    pool.take(hit)
    assert pool.num_free == 1 and hit.ref_count == 1
    pool.release([hit])
    # Unhashed blocks are handed out first; the cached one goes last, then loses its hash.
    first, second = pool.allocate(2)
    assert first.block_id != block.block_id and second is block
    assert block.hash is None and pool.lookup(h, [1, 2]) is None


def test_lookup_checks_tokens_not_just_the_hash():
    pool = BlockPool(1)
    (block,) = pool.allocate(1)
    pool.cache(block, 42, [1, 2], None)
    assert pool.lookup(42, [1, 3]) is None


def test_release_evicts_the_tail_of_a_sequence_first():
    pool = BlockPool(3)
    blocks = pool.allocate(3)
    for i, b in enumerate(blocks):
        pool.cache(b, 100 + i, [i], 100 + i - 1 if i else None)
    pool.release(blocks)
    (evicted,) = pool.allocate(1)
    assert evicted is blocks[2]  # the prefix (blocks 0, 1) stays cached longest
    assert pool.lookup(100, [0]) is blocks[0]


def test_shared_block_is_freed_only_by_its_last_holder():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.cache(block, 7, [7], None)
    pool.take(block)
    pool.release([block])
    assert pool.num_free == 1
    pool.release([block])
    assert pool.num_free == 2
