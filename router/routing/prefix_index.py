"""PrefixIndex: which prompt blocks one backend probably still has in its KV cache.

An approximation kept by the router from what it dispatched: an LRU of block hashes, sized
from the backend's KV capacity. Because block hashes are chained, a block can only match if
every block before it matched too, so a lookup counts leading hits. It also counts the distinct
prompt *roots* (first blocks: in practice, system prompts or conversations) it holds, which
says how many tenants' prefixes compete for that backend's cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Sequence


def leading_matches(block_hashes: Sequence[int], held: Container[int]) -> int:
    """How many leading blocks are held: chained hashes mean a block can only be reached
    through every block before it."""
    matched = 0
    for block in block_hashes:
        if block not in held:
            break
        matched += 1
    return matched


class PrefixIndex:
    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = max(1, capacity_blocks)
        self._blocks: OrderedDict[int, bool] = OrderedDict()  # block hash -> is a first block
        self.roots = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, block_hashes: Sequence[int]) -> int:
        """How many leading blocks are present. Looking does not count as use."""
        return leading_matches(block_hashes, self._blocks)

    def insert(self, block_hashes: Sequence[int]) -> None:
        """Record a dispatched prompt. Its blocks are touched last to first, so the first block
        of a prefix is the most recently used and the tail is evicted before the head, as an
        engine's cache evicts."""
        blocks = self._blocks
        for block in reversed(block_hashes):
            if block in blocks:
                blocks.move_to_end(block)
            else:
                blocks[block] = False
        # Hashes are chained from a per-model seed, so a first block never equals a later one.
        if block_hashes and not blocks[block_hashes[0]]:
            blocks[block_hashes[0]] = True
            self.roots += 1
        self._evict()

    def resize(self, capacity_blocks: int) -> None:
        self.capacity_blocks = max(1, capacity_blocks)
        self._evict()

    def clear(self) -> None:
        self._blocks.clear()
        self.roots = 0

    def _evict(self) -> None:
        while len(self._blocks) > self.capacity_blocks:
            _, is_root = self._blocks.popitem(last=False)
            self.roots -= is_root
