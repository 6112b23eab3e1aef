from triage_router.policies.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from triage_router.router.routing.kv_events.block_hashes import pack_tokens, prefix_hashes
from triage_router.router.routing.kv_events.block_index import KVBlockIndex


def stored(hashes, parent, tokens, size=4, medium="GPU", **extra):
    return BlockStored(list(hashes), parent, list(tokens), size, None, medium, None, **extra)


def request_hashes(tokens, size=4):
    return prefix_hashes(pack_tokens(tokens), size, 100)


PROMPT = list(range(100, 112))  # three blocks of 4


def test_a_stored_prompt_matches_the_request_that_made_it():
    index = KVBlockIndex()
    index.apply(stored([7, 8, 9], None, PROMPT))
    assert index.match(request_hashes(PROMPT)) == 3
    assert index.match(request_hashes(PROMPT[:8] + [1, 2, 3, 4])) == 2
    assert index.match(request_hashes([1] + PROMPT[1:])) == 0
    assert index.block_size == 4 and index.cached_tokens == 12 and index.roots == 1


def test_hashes_do_not_depend_on_the_publishers_hash_values():
    """Two backends (or one restarted) with different seeds give the same index."""
    a, b = KVBlockIndex(), KVBlockIndex()
    a.apply(stored([1, 2], None, PROMPT[:8]))
    a.apply(stored([3], 2, PROMPT[8:]))
    b.apply(stored([b"x" * 32, b"y" * 32, b"z" * 32], None, PROMPT))
    assert a.match(request_hashes(PROMPT)) == b.match(request_hashes(PROMPT)) == 3


def test_a_child_stored_later_chains_on_its_parent():
    index = KVBlockIndex()
    index.apply(stored([1], None, PROMPT[:4]))
    index.apply(stored([2, 3], 1, PROMPT[4:]))
    assert index.match(request_hashes(PROMPT)) == 3 and index.roots == 1


def test_blocks_of_an_unknown_parent_are_skipped():
    index = KVBlockIndex()
    index.apply(stored([2, 3], 99, PROMPT[4:]))
    assert len(index) == 0 and index.counts.orphans == 2
    assert index.match(request_hashes(PROMPT)) == 0


def test_removal_breaks_the_match_at_the_removed_block():
    index = KVBlockIndex()
    index.apply(stored([1, 2, 3], None, PROMPT))
    index.apply(BlockRemoved([2], "GPU"))
    assert index.match(request_hashes(PROMPT)) == 1
    assert len(index) == 2


def test_duplicates_and_unknown_removals_are_harmless():
    index = KVBlockIndex()
    event = stored([1, 2, 3], None, PROMPT)
    index.apply(event)
    index.apply(event)  # replayed
    index.apply(BlockRemoved([42], "GPU"))
    assert len(index) == 3 and index.roots == 1
    index.apply(BlockRemoved([1, 2, 3], "GPU"))
    index.apply(BlockRemoved([1, 2, 3], "GPU"))
    assert len(index) == 0 and index.roots == 0


def test_a_block_counts_while_any_tier_holds_it():
    index = KVBlockIndex()
    index.apply(stored([1], None, PROMPT[:4], medium="GPU"))
    index.apply(stored([1], None, PROMPT[:4], medium="CPU"))
    index.apply(BlockRemoved([1], "GPU"))
    assert index.match(request_hashes(PROMPT)) == 1
    index.apply(BlockRemoved([1], "CPU"))
    assert index.match(request_hashes(PROMPT)) == 0


def test_all_blocks_cleared_empties_it():
    index = KVBlockIndex()
    index.apply(stored([1, 2, 3], None, PROMPT))
    index.apply(AllBlocksCleared())
    assert len(index) == 0 and index.roots == 0 and index.counts.cleared == 1


def test_blocks_keyed_by_a_salt_or_lora_never_match_a_plain_request():
    index = KVBlockIndex()
    index.apply(stored([1, 2, 3], None, PROMPT, extra_keys=[("salt",), None, None]))
    assert index.match(request_hashes(PROMPT)) == 0


def test_other_cache_groups_are_ignored():
    index = KVBlockIndex()
    index.apply(stored([1, 2, 3], None, PROMPT, group_idx=1))
    assert len(index) == 0


def test_a_short_token_list_indexes_only_the_blocks_it_covers():
    index = KVBlockIndex()
    index.apply(stored([1, 2, 3], None, PROMPT[:6]))
    assert index.match(request_hashes(PROMPT)) == 1


def test_bounded_by_forgetting_the_oldest():
    index = KVBlockIndex(max_blocks=2)
    index.apply(stored([1, 2, 3], None, PROMPT))
    assert len(index) == 2 and index.roots == 0  # the root, stored first, went first
