from __future__ import annotations

import torch

from triage_router.engine_server.kv_cache import KVCacheManager
from triage_router.engine_server.sequence import SamplingParams, Sequence


def manager(num_blocks: int = 8, num_swap_blocks: int = 8) -> KVCacheManager:
    return KVCacheManager(
        num_layers=2, kv_heads=1, head_dim=2, block_size=4, num_blocks=num_blocks, num_swap_blocks=num_swap_blocks,
        dtype=torch.float32, device=torch.device("cpu"),
    )


def computed(kv: KVCacheManager, tokens: list[int], rid: str = "a") -> Sequence:
    seq = Sequence(rid, tokens, SamplingParams())
    kv.match_prefix(seq)
    assert kv.allocate_slots(seq, seq.num_uncomputed_tokens)
    seq.num_computed_tokens = len(tokens)
    kv.cache_full_blocks(seq)
    return seq


def test_prefix_hit_never_covers_the_last_prompt_token():
    kv = manager()
    first = computed(kv, list(range(8)))  # exactly two full blocks
    kv.free(first)
    again = Sequence("b", list(range(8)), SamplingParams())
    assert kv.match_prefix(again) == 4  # the second block holds the last token: recomputed
    longer = Sequence("c", list(range(9)), SamplingParams())
    kv.free(again)
    assert kv.match_prefix(longer) == 8
    assert (kv.prefix_queries, kv.prefix_hits) == (8 + 8 + 9, 4 + 8)


def test_blocks_are_shared_between_running_sequences():
    kv = manager()
    a = computed(kv, list(range(9)), "a")
    b = Sequence("b", list(range(9)), SamplingParams())
    assert kv.match_prefix(b) == 8
    assert b.block_table[:2] == a.block_table[:2]
    assert a.block_table[0].ref_count == 2
    kv.free(a)
    kv.free(b)
    assert kv.pool.num_free == kv.pool.num_blocks


def test_allocate_slots_is_all_or_nothing():
    kv = manager(num_blocks=2)
    seq = Sequence("a", list(range(12)), SamplingParams())
    assert not kv.allocate_slots(seq, 12)
    assert seq.block_table == [] and kv.pool.num_free == 2


def test_swap_out_and_in_preserves_the_kv_contents():
    kv = manager()
    seq = computed(kv, list(range(6)))
    ids = [b.block_id for b in seq.block_table]
    for layer, cache in enumerate(kv.kv_caches):
        cache[:, ids] = torch.randn(2, len(ids), 4, 1, 2)
    before = [cache[:, ids].clone() for cache in kv.kv_caches]
    kv.swap_out(seq)
    assert seq.block_table == [] and len(seq.host_blocks) == 2 and kv.pool.num_free == kv.pool.num_blocks
    for cache in kv.kv_caches:  # someone else overwrites the freed blocks
        cache.zero_()
    kv.swap_in(seq)
    new_ids = [b.block_id for b in seq.block_table]
    for cache, old in zip(kv.kv_caches, before):
        assert torch.equal(cache[:, new_ids], old)
    assert len(kv.host_free) == kv.num_swap_blocks
