"""KV blocks with prefix caching: chained block hashes, reference counts, an LRU free list.

A block is in exactly one of two states:
- in use: ref_count > 0, held by that many sequences, absent from the free list;
- free: ref_count == 0, in the free list. A free block may still hold a hash and its KV,
  so a later sequence with the same prefix can take it back until it is evicted.
Allocation takes the least recently freed block from the front of the free list and drops
its hash (eviction). Only full blocks are ever hashed, so cached content is immutable.

With an event log, every hash a block gains (`cache`) or loses (eviction, reset) is reported
there as a KV-cache event. Releasing a block reports nothing: its content stays reusable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq

from triage_router.engine_server.kv_event_log import KVEventLog


def block_hash(parent: int | None, token_ids: Seq[int]) -> int:
    """Chained hash: a block's identity includes every token before it."""
    return hash((parent, tuple(token_ids)))


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] = ()


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True, events: KVEventLog | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError("the KV cache needs at least one block")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.enable_caching = enable_caching
        # Ordered for LRU eviction from the front; O(1) removal when a cached block is hit.
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}  # block hash -> block id
        self.events = events

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        return 1.0 - len(self.free) / len(self.blocks)

    def allocate(self, n: int) -> list[Block]:
        if n > len(self.free):
            raise RuntimeError(f"asked for {n} blocks, {len(self.free)} free")
        out = []
        evicted = []
        for _ in range(n):
            block_id, _ = self.free.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash is not None:  # evict its cached content
                if self.cached.get(block.hash) == block_id:
                    del self.cached[block.hash]
                    evicted.append(block.hash)
                block.hash, block.token_ids = None, ()
            block.ref_count = 1
            out.append(block)
        if evicted and self.events is not None:
            self.events.removed(evicted)
        return out

    def lookup(self, h: int, token_ids: Seq[int]) -> Block | None:
        """The cached block for hash h, if its tokens really match (guards hash collisions)."""
        block_id = self.cached.get(h)
        if block_id is None:
            return None
        block = self.blocks[block_id]
        return block if block.token_ids == tuple(token_ids) else None

    def take(self, block: Block) -> None:
        """Share a cached block with one more sequence."""
        if block.ref_count == 0:
            del self.free[block.block_id]
        block.ref_count += 1

    def cache(self, block: Block, h: int, token_ids: Seq[int], parent: int | None) -> None:
        """Publish a full block whose chained hash h builds on `parent` (the previous block's
        hash; None for a first block). If identical content is already cached, keep the first copy."""
        if not self.enable_caching or block.hash is not None or h in self.cached:
            return
        block.hash, block.token_ids = h, tuple(token_ids)
        self.cached[h] = block.block_id
        if self.events is not None:
            self.events.stored(h, parent, token_ids)

    def release(self, blocks: Seq[Block]) -> None:
        """Drop one reference to each block. Pass a sequence's blocks in order: the tail is
        freed first so that it is evicted first, keeping shared prefixes alive longer."""
        for block in reversed(blocks):
            block.ref_count -= 1
            assert block.ref_count >= 0, "block released more often than taken"
            if block.ref_count == 0:
                self.free[block.block_id] = None
                if block.hash is None:  # nothing to reuse: hand it out before cached blocks
                    self.free.move_to_end(block.block_id, last=False)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; only possible while no block is in use."""
        if len(self.free) != len(self.blocks):
            return False
        for block in self.blocks:
            block.hash, block.token_ids = None, ()
        self.cached.clear()
        if self.events is not None:
            self.events.cleared()
        return True
