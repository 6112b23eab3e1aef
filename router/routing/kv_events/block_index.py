"""KVBlockIndex: the prompt blocks one backend reports holding, by the router's own hashes.

Built from the backend's events alone. A stored block's hash is rebuilt from its parent's (found
through the publisher's hash of the parent) and its token ids. A block whose parent the index
never saw cannot be rebuilt and is skipped: no request could reach it through a leading match
anyway. Removals and stores for blocks it does not know, and stores it already holds, are
harmless (events can arrive twice, after a replay). A block counts while any tier (`medium`)
holds it, as an offloaded block still saves most of a prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from triage_router.policies.kv_events import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KVEvent
from triage_router.router.routing.kv_events.block_hashes import ROOT_PARENT, chain_hash, pack_tokens
from triage_router.router.routing.prefix_index import leading_matches

# Far above any real cache (an 80 GB GPU holds ~30,000 blocks of 16 tokens for an 8B model), and
# a bound on memory (~200 bytes a block) if removals go missing.
MAX_BLOCKS = 262_144


@dataclass(slots=True)
class _Held:
    ours: int
    media: set[str | None]
    root: bool


@dataclass(slots=True)
class IndexCounts:
    stored: int = 0
    removed: int = 0
    cleared: int = 0
    orphans: int = 0  # stored blocks whose parent was unknown, so not indexed


class KVBlockIndex:
    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        self.max_blocks = max_blocks
        # Tokens per block, from the first store (vLLM sends it with every one).
        self.block_size = 0
        self._held: dict[BlockHash, _Held] = {}  # publisher's hash -> ours; insertion order = age
        self._ours: dict[int, int] = {}  # our hash -> publisher blocks holding it (1, in practice)
        self.roots = 0
        self.counts = IndexCounts()

    def __len__(self) -> int:
        return len(self._ours)

    @property
    def cached_tokens(self) -> int:
        return len(self._ours) * self.block_size

    def match(self, block_hashes: Sequence[int]) -> int:
        """How many leading blocks the backend holds."""
        return leading_matches(block_hashes, self._ours)

    def apply(self, event: KVEvent) -> None:
        if isinstance(event, BlockStored):
            self._store(event)
        elif isinstance(event, BlockRemoved):
            if event.group_idx in (None, 0):
                for block in event.block_hashes:
                    self._remove(block, event.medium)
        elif isinstance(event, AllBlocksCleared):
            self.clear()
            self.counts.cleared += 1

    def clear(self) -> None:
        self._held.clear()
        self._ours.clear()
        self.roots = 0

    def _store(self, event: BlockStored) -> None:
        # Hybrid models publish one group per attention kind; full attention is group 0.
        if event.group_idx not in (None, 0) or event.block_size <= 0:
            return
        size = self.block_size = event.block_size
        if event.parent_block_hash is None:
            parent = ROOT_PARENT
        elif (held := self._held.get(event.parent_block_hash)) is not None:
            parent = held.ours
        else:
            self.counts.orphans += len(event.block_hashes)
            return
        packed = pack_tokens(event.token_ids)
        step = size * 4
        for i, block in enumerate(event.block_hashes):
            tokens = packed[i * step:(i + 1) * step]
            if len(tokens) < step:
                break  # fewer token ids than blocks: a malformed event, keep what it proved
            parent = chain_hash(parent, tokens, _extra(event, i))
            self._hold(block, parent, event.medium, root=i == 0 and event.parent_block_hash is None)
        self.counts.stored += len(event.block_hashes)

    def _hold(self, block: BlockHash, ours: int, medium: str | None, root: bool) -> None:
        held = self._held.get(block)
        if held is not None:
            held.media.add(medium)
            return
        self._held[block] = _Held(ours, {medium}, root)
        self._ours[ours] = self._ours.get(ours, 0) + 1
        self.roots += root
        while len(self._held) > self.max_blocks:
            self._forget(next(iter(self._held)))

    def _remove(self, block: BlockHash, medium: str | None) -> None:
        held = self._held.get(block)
        if held is None:
            return
        held.media.discard(medium)
        if not held.media:
            self._forget(block)
            self.counts.removed += 1

    def _forget(self, block: BlockHash) -> None:
        held = self._held.pop(block)
        left = self._ours[held.ours] - 1
        if left:
            self._ours[held.ours] = left
        else:
            del self._ours[held.ours]
        self.roots -= held.root


def _extra(event: BlockStored, i: int) -> bytes:
    """What else keyed this block in the backend's cache, as bytes for our hash."""
    keys = event.extra_keys[i] if event.extra_keys is not None and i < len(event.extra_keys) else None
    if keys is None and event.lora_name is None and event.lora_id is None:
        return b""
    return msgspec.msgpack.encode((event.lora_name, event.lora_id, keys))
