"""Random paged decode batches on a CUDA device, for the kernel benchmarks.

Each sequence owns its blocks, placed at random in the cache, except a shared prefix whose
blocks every sequence's table points to (as a prefix cache lays them out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: import triage_router.kernels


def require_cuda() -> torch.device:
    """Refuse clearly when there is nothing to measure on."""
    import os

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("bench/kernels: unset TRITON_INTERPRET; interpreted kernels say nothing about GPU speed")
    if not torch.cuda.is_available():
        sys.exit("bench/kernels: needs a CUDA GPU (an H100 for the figures in docs/benchmarks.md); none found")
    return torch.device("cuda")


@dataclass(frozen=True)
class DecodeBatch:
    q: torch.Tensor  # [batch, q_heads, head_dim]
    k_cache: torch.Tensor  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # int32 [batch, max_blocks]
    query_start_loc: torch.Tensor  # int32 [batch + 1]
    seq_lens: torch.Tensor  # int32 [batch]


def decode_batch(
    batch: int,
    seq_len: int,
    q_heads: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
    shared_prefix: int = 0,
    seed: int = 0,
) -> DecodeBatch:
    """``batch`` sequences of ``seq_len`` tokens, decoding one token each; the first
    ``shared_prefix`` tokens (a multiple of ``block_size``) sit in blocks they all share."""
    assert shared_prefix % block_size == 0 and shared_prefix <= seq_len
    torch.manual_seed(seed)
    blocks_per_seq = -(-seq_len // block_size)
    shared = shared_prefix // block_size
    own = blocks_per_seq - shared
    num_blocks = shared + batch * own
    perm = torch.randperm(num_blocks, device=device, dtype=torch.int64).to(torch.int32)
    tables = torch.empty(batch, blocks_per_seq, dtype=torch.int32, device=device)
    tables[:, :shared] = perm[:shared]
    tables[:, shared:] = perm[shared:].view(batch, own)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    return DecodeBatch(
        q=torch.randn(batch, q_heads, head_dim, dtype=dtype, device=device),
        k_cache=torch.randn(shape, dtype=dtype, device=device),
        v_cache=torch.randn(shape, dtype=dtype, device=device),
        block_tables=tables,
        query_start_loc=torch.arange(batch + 1, dtype=torch.int32, device=device),
        seq_lens=torch.full((batch,), seq_len, dtype=torch.int32, device=device),
    )


def contiguous_kv(b: DecodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's K and V gathered into contiguous ``[batch, kv_heads, seq_len, head_dim]`` for SDPA."""
    seq_len = int(b.seq_lens[0])
    def gather(cache: torch.Tensor) -> torch.Tensor:
        blocks = cache[b.block_tables.long()]  # [batch, blocks, block_size, kv_heads, dim]
        return blocks.flatten(1, 2)[:, :seq_len].transpose(1, 2).contiguous()
    return gather(b.k_cache), gather(b.v_cache)
