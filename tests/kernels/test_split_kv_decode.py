"""Split-KV decode against the paged-attention reference."""

from __future__ import annotations

import pytest
import torch

from triage_router.kernels.attention_reference import paged_attention_reference
from triage_router.kernels.split_kv_decode import num_kv_splits, split_kv_decode
from tests.kernels.paged_batches import TOLERANCE, make_batch


@pytest.mark.parametrize(
    ("group", "num_splits", "dtype"),
    [(1, 3, torch.float32), (3, 4, torch.float16), (8, 2, torch.float32), (3, 1, torch.float32)],
)
def test_split_decode_matches_reference(group: int, num_splits: int, dtype: torch.dtype) -> None:
    # Short sequences leave some splits empty (LSE -inf); 70 keys span several tiles per split.
    seq_lens = [70, 1, 17, 33]
    batch = make_batch(
        seed=group * 10 + num_splits, query_lens=[1] * len(seq_lens), seq_lens=seq_lens,
        num_kv_heads=2, group=group, head_dim=64, block_size=16, dtype=dtype,
    )  # fmt: skip
    out, lse = split_kv_decode(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, num_splits=num_splits
    )
    ref_out, ref_lse = paged_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref_out.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


def test_default_split_count_runs() -> None:
    batch = make_batch(
        seed=2, query_lens=[1, 1], seq_lens=[40, 9], num_kv_heads=1, group=3,
        head_dim=32, block_size=32, dtype=torch.float32,
    )  # fmt: skip
    out, _ = split_kv_decode(batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens)
    ref_out, _ = paged_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


def test_split_heuristic_fills_the_gpu_only_when_it_pays() -> None:
    # Batch 1, 8 KV heads, 32k context on 132 SMs: split to about two waves.
    assert num_kv_splits(1, 8, 32768, 132) == 32
    # Batch 64 already launches 512 programs: no split.
    assert num_kv_splits(64, 8, 2048, 132) == 1
    # Short contexts are not worth splitting, however idle the GPU.
    assert num_kv_splits(1, 8, 300, 132) == 1
    assert num_kv_splits(2, 3, 1024, 132) == 4
