"""KV-cache events: the messages in which a backend says which prompt blocks its cache holds.

The vocabulary is vLLM's (`--kv-events-config`), so that one subscriber in the router serves
vLLM and our own engine alike. On the wire each message is three ZeroMQ frames: the topic, an
8-byte big-endian sequence number, and a msgpack `EventBatch`. A batch is a positional array
`[ts, events, data_parallel_rank]`; each event is a map tagged by `"type"` with the class name.

The block hashes inside are the publisher's own, seeded per process: they identify a block
within one backend's stream, and the router never compares them across backends (it rebuilds
its own from `token_ids`). Data only: no I/O here.
"""

from __future__ import annotations

from typing import Any

import msgspec

# A block hash as published: vLLM sends a 64-bit int, or the raw digest bytes for sha256 hashing.
BlockHash = int | bytes

# The sequence number that ends a replay (a signed -1, as vLLM sends it).
END_OF_REPLAY = (-1).to_bytes(8, "big", signed=True)


class KVCacheEvent(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """Base of the three events; the tag is the class name, under the key "type"."""


class BlockStored(KVCacheEvent):
    """Full blocks entered the cache: `block_hashes[i]` holds
    `token_ids[i * block_size:(i + 1) * block_size]`, and the first block's parent is
    `parent_block_hash` (None: the first block of a prompt)."""

    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    # Sent always by vLLM (None when unused), so they have no defaults here either.
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    # Per block: what else entered vLLM's hash (LoRA name, multimodal identifiers, cache_salt).
    extra_keys: list[tuple[Any, ...] | None] | None = None
    # Hybrid models keep one cache group per attention kind; None or 0 for the rest.
    group_idx: int | None = None


class BlockRemoved(KVCacheEvent):
    """Blocks left the cache (evicted, or freed without being cached)."""

    block_hashes: list[BlockHash]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    """The whole cache was reset (vLLM's /reset_prefix_cache, our engine's too)."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """What one message carries: the events of one engine step, in order."""

    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


def sequence_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")
