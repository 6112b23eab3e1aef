"""Block hashes the router computes itself, from token ids, for both sides of a match.

A backend's published hashes are seeded per process (vLLM's), so replicas and restarts cannot
compare them. The router instead chains xxh3-64 over the token ids: h_i = xxh3(h_{i-1} ‖ tokens_i
‖ extra_i), with h_{-1} = 0. Token ids are packed as little-endian uint32, which covers every
vocabulary in use.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

import xxhash

ROOT_PARENT = 0
_TOKEN_BYTES = 4


def pack_tokens(token_ids: Sequence[int]) -> bytes:
    packed = array("I", token_ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def chain_hash(parent: int, block: bytes, extra: bytes = b"") -> int:
    """One block's hash: its parent's, its packed tokens, and anything else that keyed the
    backend's cache (a LoRA, a cache salt): a block with extras never equals one without."""
    return xxhash.xxh3_64_intdigest(parent.to_bytes(8, "little") + block + extra)


def prefix_hashes(packed: bytes, block_size: int, max_blocks: int) -> tuple[int, ...]:
    """The hashes of a prompt's full blocks (a partial last block is never cached), at most
    `max_blocks` of them."""
    step = block_size * _TOKEN_BYTES
    blocks = min(len(packed) // step, max_blocks)
    view = memoryview(packed)
    hashes = []
    parent = ROOT_PARENT
    for start in range(0, blocks * step, step):
        parent = xxhash.xxh3_64_intdigest(parent.to_bytes(8, "little") + view[start:start + step])
        hashes.append(parent)
    return tuple(hashes)
