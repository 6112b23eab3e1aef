"""The paged KV cache: device tensors, host swap space, and per-sequence block bookkeeping.

Invariants:
- seq.block_table covers at least seq.num_computed_tokens tokens while the sequence runs;
  the scheduler grows it before each step with `allocate_slots`.
- seq.block_hashes[i] is the chained hash of the sequence's i-th full block of tokens (it
  depends only on tokens, so it survives preemption). block_table[:num_published_blocks]
  have been offered to the prefix cache (published, or a duplicate of a published block).
- A prefix hit never covers the last token: its logits are needed to sample the next one.
- A SWAPPED sequence holds host blocks and no device blocks; everything else holds no host
  blocks.
"""

from __future__ import annotations

import torch

from triage_router.engine_server.block_pool import BlockPool, block_hash
from triage_router.engine_server.kv_event_log import KVEventLog
from triage_router.engine_server.sequence import Sequence


def bytes_per_block(num_layers: int, kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


class KVCacheManager:
    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        block_size: int,
        num_blocks: int,
        num_swap_blocks: int,
        dtype: torch.dtype,
        device: torch.device,
        enable_caching: bool = True,
        kv_events: bool = False,
    ) -> None:
        self.block_size = block_size
        # The prefix cache's changes, collected for KV-cache event publishing when asked for.
        self.events = KVEventLog(block_size) if kv_events else None
        self.pool = BlockPool(num_blocks, enable_caching, self.events)
        shape = (2, num_blocks, block_size, kv_heads, head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        # Host swap space: pinned on CUDA so that copies can overlap compute.
        pin = device.type == "cuda"
        host_shape = (num_layers, 2, max(num_swap_blocks, 0), block_size, kv_heads, head_dim)
        self.host_cache = torch.zeros(host_shape, dtype=dtype, pin_memory=pin)
        self.host_free: list[int] = list(range(num_swap_blocks - 1, -1, -1))
        self.num_swap_blocks = num_swap_blocks
        self.prefix_queries = 0  # prompt tokens looked up, as vLLM counts them
        self.prefix_hits = 0

    # --- sizing -------------------------------------------------------------------------

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def num_new_blocks(self, seq: Sequence, num_new_tokens: int) -> int:
        return max(self.blocks_for(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table), 0)

    # --- prefix cache -------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> int:
        """Attach cached blocks for the sequence's leading full blocks; return tokens hit.

        Called once when a sequence without KV (new, or preempted by recompute) is admitted.
        """
        assert not seq.block_table and seq.num_computed_tokens == 0
        self.prefix_queries += len(seq.token_ids)
        if not self.pool.enable_caching:
            return 0
        bs = self.block_size
        # Stop before the last token: the step that computes it produces the logits we need.
        limit = (len(seq.token_ids) - 1) // bs
        self._extend_hashes(seq, limit)
        hit = []
        for i in range(limit):
            block = self.pool.lookup(seq.block_hashes[i], seq.token_ids[i * bs:(i + 1) * bs])
            if block is None:
                break
            hit.append(block)
        for block in hit:
            self.pool.take(block)
        seq.block_table = hit
        seq.num_published_blocks = len(hit)
        seq.num_computed_tokens = len(hit) * bs
        self.prefix_hits += seq.num_computed_tokens
        return seq.num_computed_tokens

    def unmatch_prefix(self, seq: Sequence, hit_tokens: int) -> None:
        """Undo `match_prefix` for a sequence that could not be admitted after all."""
        self.free(seq)
        seq.num_computed_tokens = 0
        self.prefix_queries -= len(seq.token_ids)
        self.prefix_hits -= hit_tokens

    def _extend_hashes(self, seq: Sequence, num_full_blocks: int) -> None:
        bs = self.block_size
        for i in range(len(seq.block_hashes), num_full_blocks):
            parent = seq.block_hashes[i - 1] if i else None
            seq.block_hashes.append(block_hash(parent, seq.token_ids[i * bs:(i + 1) * bs]))

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Publish the blocks that this step filled. Called after each forward pass."""
        if not self.pool.enable_caching:
            return
        bs = self.block_size
        full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        self._extend_hashes(seq, full)
        for i in range(seq.num_published_blocks, full):
            parent = seq.block_hashes[i - 1] if i else None
            self.pool.cache(seq.block_table[i], seq.block_hashes[i], seq.token_ids[i * bs:(i + 1) * bs], parent)
        seq.num_published_blocks = max(seq.num_published_blocks, full)

    # --- allocation ---------------------------------------------------------------------

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Grow the block table to hold num_new_tokens more; False (and no change) if the pool is short."""
        need = self.num_new_blocks(seq, num_new_tokens)
        if need > self.pool.num_free:
            return False
        if need:
            seq.block_table.extend(self.pool.allocate(need))
        return True

    def free(self, seq: Sequence) -> None:
        """Give back every device and host block of the sequence."""
        self.pool.release(seq.block_table)
        seq.block_table = []
        seq.num_published_blocks = 0
        self.host_free.extend(reversed(seq.host_blocks))
        seq.host_blocks = []

    # --- swapping -----------------------------------------------------------------------

    def can_swap_out(self, seq: Sequence) -> bool:
        return len(seq.block_table) <= len(self.host_free)

    def swap_out(self, seq: Sequence) -> None:
        """Copy the sequence's KV to host blocks and release its device blocks."""
        n = len(seq.block_table)
        host = [self.host_free.pop() for _ in range(n)]
        dev_idx = torch.tensor([b.block_id for b in seq.block_table], device=self.kv_caches[0].device)
        host_idx = torch.tensor(host)
        for layer, cache in enumerate(self.kv_caches):
            self.host_cache[layer][:, host_idx] = cache[:, dev_idx].to("cpu", non_blocking=True)
        self.pool.release(seq.block_table)
        seq.block_table, seq.host_blocks = [], host
        seq.num_published_blocks = 0

    def can_swap_in(self, seq: Sequence, extra_tokens: int = 0) -> bool:
        need = max(len(seq.host_blocks), self.blocks_for(seq.num_computed_tokens + extra_tokens))
        return need <= self.pool.num_free

    def swap_in(self, seq: Sequence) -> None:
        """Bring a swapped sequence's KV back into fresh device blocks."""
        blocks = self.pool.allocate(len(seq.host_blocks))
        device = self.kv_caches[0].device
        dev_idx = torch.tensor([b.block_id for b in blocks], device=device)
        host_idx = torch.tensor(seq.host_blocks)
        for layer, cache in enumerate(self.kv_caches):
            cache[:, dev_idx] = self.host_cache[layer][:, host_idx].to(device, non_blocking=True)
        self.host_free.extend(reversed(seq.host_blocks))
        seq.block_table, seq.host_blocks = blocks, []

    def usage(self) -> float:
        return self.pool.usage()
