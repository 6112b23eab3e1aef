from __future__ import annotations

from triage_router.router.routing.prefix_index import PrefixIndex


def test_match_counts_leading_blocks_only() -> None:
    index = PrefixIndex(100)
    index.insert([1, 2, 3, 4])
    assert index.match([1, 2, 3, 4, 5]) == 4
    assert index.match([1, 2, 9, 4]) == 2
    assert index.match([9, 1, 2]) == 0
    assert index.match([]) == 0


def test_capacity_is_a_hard_bound_and_tails_go_first() -> None:
    index = PrefixIndex(6)
    index.insert([1, 2, 3, 4])
    index.insert([10, 20, 30, 40])
    assert len(index) == 6
    # The older prompt lost its tail, not its head: its prefix still matches.
    assert index.match([1, 2, 3, 4]) == 2
    assert index.match([10, 20, 30, 40]) == 4


def test_reuse_refreshes_a_prefix() -> None:
    index = PrefixIndex(4)
    index.insert([1, 2])
    index.insert([3, 4])
    index.insert([1, 2])  # used again: now the most recent
    index.insert([5])
    # One block had to go: the tail of the least recently used prompt.
    assert index.match([1, 2]) == 2 and index.match([3, 4]) == 1


def test_match_does_not_refresh() -> None:
    index = PrefixIndex(2)
    index.insert([1])
    index.insert([2])
    index.match([1])
    index.insert([3])
    assert index.match([1]) == 0 and index.match([2]) == 1


def test_resize_and_clear() -> None:
    index = PrefixIndex(10)
    index.insert(list(range(10)))
    index.resize(3)
    assert len(index) == 3 and index.match([0, 1, 2]) == 3
    index.clear()
    assert len(index) == 0


def test_roots_count_distinct_first_blocks_until_evicted() -> None:
    index = PrefixIndex(6)
    index.insert([1, 2, 3])
    index.insert([1, 2, 7])  # the same system prompt, another turn: still one root
    assert index.roots == 1
    index.insert([10, 20])
    assert index.roots == 2
    index.insert([30, 40, 50, 60, 70])  # evicts tails first, then the oldest heads
    assert index.match([1]) == 0 and index.roots == 2  # root 1 went, root 30 came
    index.resize(1)
    assert index.roots == 1
    index.clear()
    assert index.roots == 0
