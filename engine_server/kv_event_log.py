"""The block pool's KV-cache events of one engine step, in vLLM's vocabulary.

The pool reports each change as it happens; the engine takes the list once per step and
publishes it as one batch. Consecutive stores that continue one chain share one `BlockStored`,
as vLLM sends a request's newly full blocks together.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

from triage_router.policies.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

# vLLM names its primary KV pool "GPU" on every platform, its CPU build included.
MEDIUM = "GPU"
_U64 = (1 << 64) - 1


def external_hash(h: int) -> int:
    """Python's hash is a signed 64-bit int; vLLM publishes unsigned 64-bit ints."""
    return h & _U64


class KVEventLog:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.events: list[KVEvent] = []

    def stored(self, h: int, parent: int | None, token_ids: Seq[int]) -> None:
        """One full block got its hash (chained on `parent`, None for a prompt's first block)."""
        ext, ext_parent = external_hash(h), None if parent is None else external_hash(parent)
        last = self.events[-1] if self.events else None
        if isinstance(last, BlockStored) and ext_parent is not None and last.block_hashes[-1] == ext_parent:
            last.block_hashes.append(ext)
            last.token_ids.extend(token_ids)
            assert last.extra_keys is not None
            last.extra_keys.append(None)
            return
        self.events.append(BlockStored(
            block_hashes=[ext], parent_block_hash=ext_parent, token_ids=list(token_ids),
            block_size=self.block_size, lora_id=None, medium=MEDIUM, lora_name=None,
            # What vLLM sends for plain text blocks: no extra hash keys, the one cache group.
            extra_keys=[None], group_idx=0,
        ))

    def removed(self, hashes: Seq[int]) -> None:
        """Cached blocks lost their hash (evicted for reuse)."""
        self.events.append(BlockRemoved(block_hashes=[external_hash(h) for h in hashes], medium=MEDIUM, group_idx=0))

    def cleared(self) -> None:
        self.events.append(AllBlocksCleared())

    def take(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events
