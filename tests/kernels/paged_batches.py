"""Random paged-KV batches for the kernel tests: ragged lengths, shuffled block tables.

Cache slots that no sequence owns hold NaN, and block-table padding points at NaN-filled blocks,
so a kernel that reads anything outside a sequence's KV produces NaN instead of passing by luck.
Batches are built on the CPU from seeded generators, then moved to ``DEVICE``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


# CPU under the interpreter (the default, see conftest.py); CUDA when TRITON_INTERPRET=0.
DEVICE = torch.device("cuda" if os.environ.get("TRITON_INTERPRET") == "0" else "cpu")
# The interpreter gets bf16 tl.dot and bf16 stores wrong, so bf16 is tested on a GPU only.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class PagedBatch:
    q: torch.Tensor  # [num_tokens, num_q_heads, head_dim]
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # int32 [num_seqs, max_blocks]
    query_start_loc: torch.Tensor  # int32 [num_seqs + 1]
    seq_lens: torch.Tensor  # int32 [num_seqs]


def make_batch(
    seed: int,
    query_lens: Sequence[int],
    seq_lens: Sequence[int],
    *,
    num_kv_heads: int,
    group: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    shared_prefixes: Sequence[tuple[Sequence[int], int]] = (),
) -> PagedBatch:
    """A batch whose sequence ``s`` has ``seq_lens[s]`` tokens of KV, the last ``query_lens[s]`` queried.

    ``shared_prefixes``: ``(member sequences, prefix_len)`` pairs; the members' block tables share
    the blocks covering their first ``prefix_len`` tokens (``prefix_len`` a multiple of
    ``block_size``), as a prefix cache would lay them out.
    """
    assert len(query_lens) == len(seq_lens)
    assert all(0 <= ql <= sl for ql, sl in zip(query_lens, seq_lens))
    gen = torch.Generator().manual_seed(seed)
    num_seqs = len(seq_lens)
    blocks_of = [-(-sl // block_size) for sl in seq_lens]
    shared_of: dict[int, tuple[int, int]] = {}  # seq -> (group index, shared block count)
    for g, (members, prefix_len) in enumerate(shared_prefixes):
        assert prefix_len % block_size == 0
        for s in members:
            assert prefix_len <= seq_lens[s] and s not in shared_of
            shared_of[s] = (g, prefix_len // block_size)
    own_blocks = sum(blocks_of[s] - shared_of.get(s, (0, 0))[1] for s in range(num_seqs))
    shared_blocks = sum(p // block_size for _, p in shared_prefixes)
    spare = 3
    num_blocks = own_blocks + shared_blocks + spare
    ids = torch.randperm(num_blocks, generator=gen).tolist()
    group_blocks = []
    for _, prefix_len in shared_prefixes:
        group_blocks.append([ids.pop() for _ in range(prefix_len // block_size)])
    spare_ids = ids[:spare]
    ids = ids[spare:]

    max_blocks = max(blocks_of, default=0) + 1
    pad = torch.tensor(spare_ids, dtype=torch.int32)
    table = pad[torch.randint(0, spare, (num_seqs, max_blocks), generator=gen)]
    for s in range(num_seqs):
        row = list(group_blocks[shared_of[s][0]]) if s in shared_of else []
        row += [ids.pop() for _ in range(blocks_of[s] - len(row))]
        table[s, : len(row)] = torch.tensor(row, dtype=torch.int32)

    num_q_heads = num_kv_heads * group
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    for s, sl in enumerate(seq_lens):
        for t in range(sl):
            block, slot = int(table[s, t // block_size]), t % block_size
            if torch.isnan(k_cache[block, slot]).any():  # shared blocks are written once
                k_cache[block, slot] = torch.randn(num_kv_heads, head_dim, generator=gen).to(dtype)
                v_cache[block, slot] = torch.randn(num_kv_heads, head_dim, generator=gen).to(dtype)

    starts = [0]
    for ql in query_lens:
        starts.append(starts[-1] + ql)
    q = torch.randn(starts[-1], num_q_heads, head_dim, generator=gen).to(dtype)
    return PagedBatch(
        q=q.to(DEVICE),
        k_cache=k_cache.to(DEVICE),
        v_cache=v_cache.to(DEVICE),
        block_tables=table.to(DEVICE),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=DEVICE),
        seq_lens=torch.tensor(list(seq_lens), dtype=torch.int32, device=DEVICE),
    )


def ragged_lengths(seed: int, num_seqs: int, max_query: int, max_context: int) -> tuple[list[int], list[int]]:
    """(query_lens, seq_lens) drawn at random: some decodes (1 query), some prefill chunks."""
    gen = torch.Generator().manual_seed(seed)
    query_lens = torch.randint(1, max_query + 1, (num_seqs,), generator=gen).tolist()
    context = torch.randint(0, max_context + 1, (num_seqs,), generator=gen).tolist()
    return query_lens, [q + c for q, c in zip(query_lens, context)]

