"""paged_attention against its torch reference, under the Triton interpreter."""

from __future__ import annotations

import pytest
import torch

from triage_router.kernels.paged_attention import paged_attention
from triage_router.kernels.attention_reference import paged_attention_reference
from tests.kernels.paged_batches import DEVICE, TOLERANCE, make_batch, ragged_lengths


def assert_matches(batch, out, lse, *, dtype, kv_starts=None) -> None:
    ref_out, ref_lse = paged_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables,
        batch.query_start_loc, batch.seq_lens, kv_starts=kv_starts,
    )  # fmt: skip
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and lse.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref_out.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("group", "head_dim", "block_size", "dtype"),
    [
        (1, 64, 16, torch.float32),
        (3, 64, 16, torch.float16),
        (8, 32, 32, torch.float32),
        (3, 96, 32, torch.float32),
        (8, 128, 16, torch.float16),
    ],
)
def test_mixed_prefill_and_decode(group: int, head_dim: int, block_size: int, dtype: torch.dtype) -> None:
    query_lens, seq_lens = ragged_lengths(seed=group * head_dim, num_seqs=4, max_query=7, max_context=40)
    query_lens[0] = 1  # at least one decode row
    batch = make_batch(
        seed=group + head_dim, query_lens=query_lens, seq_lens=seq_lens, num_kv_heads=2,
        group=group, head_dim=head_dim, block_size=block_size, dtype=dtype,
    )  # fmt: skip
    out, lse = paged_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    assert_matches(batch, out, lse, dtype=dtype)


def test_full_prefill_spanning_query_tiles() -> None:
    # 21 query tokens with group 1 span two 16-row tiles; causal masking inside the tile matters.
    batch = make_batch(
        seed=7, query_lens=[21, 5], seq_lens=[21, 37], num_kv_heads=1, group=1,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    out, lse = paged_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    assert_matches(batch, out, lse, dtype=torch.float32)


def test_kv_starts_limit_keys_and_empty_ranges_give_minus_inf() -> None:
    batch = make_batch(
        seed=3, query_lens=[1, 3, 1], seq_lens=[33, 20, 16], num_kv_heads=2, group=3,
        head_dim=32, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    # Sequence 2 starts at its own length: no key left, so its row is output 0, LSE -inf.
    kv_starts = torch.tensor([16, 0, 16], dtype=torch.int32, device=DEVICE)
    out, lse = paged_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc,
        batch.seq_lens, kv_starts=kv_starts,
    )  # fmt: skip
    assert_matches(batch, out, lse, dtype=torch.float32, kv_starts=kv_starts)
    assert torch.isneginf(lse[4]).all() and (out[4] == 0).all()


def test_zero_query_sequence_in_batch() -> None:
    # A sequence with no query rows this step must not disturb its neighbours. max_query_len=2
    # with GQA 8 selects the 16-row decode tile (2 query tokens per program).
    batch = make_batch(
        seed=11, query_lens=[2, 0, 1], seq_lens=[9, 30, 17], num_kv_heads=1, group=8,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    out, lse = paged_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens,
        max_query_len=2,
    )  # fmt: skip
    assert_matches(batch, out, lse, dtype=torch.float32)


def test_reference_agrees_with_sdpa_on_contiguous_kv() -> None:
    # Guards the reference itself: one sequence, whole prompt, equals torch's causal SDPA.
    batch = make_batch(
        seed=5, query_lens=[12], seq_lens=[12], num_kv_heads=2, group=3,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    ref, _ = paged_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    # On the CPU, where SDPA computes in true fp32 (a GPU may use TF32).
    block = int(batch.block_tables[0, 0])
    k = batch.k_cache[block, :12].cpu().repeat_interleave(3, dim=1)
    v = batch.v_cache[block, :12].cpu().repeat_interleave(3, dim=1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        batch.q.cpu().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    ).transpose(0, 1)
    torch.testing.assert_close(ref.cpu(), sdpa, atol=1e-5, rtol=1e-5)


def test_rejects_mismatched_heads() -> None:
    batch = make_batch(
        seed=1, query_lens=[1], seq_lens=[4], num_kv_heads=2, group=1,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    with pytest.raises(ValueError, match="multiple of kv heads"):
        paged_attention(
            batch.q[:, :1].repeat(1, 3, 1), batch.k_cache, batch.v_cache, batch.block_tables,
            batch.query_start_loc, batch.seq_lens,
        )  # fmt: skip


def test_rejects_int64_index_tensors() -> None:
    # The kernel reads int32; an int64 block table would be misread without this check.
    batch = make_batch(
        seed=1, query_lens=[1], seq_lens=[4], num_kv_heads=1, group=1,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    with pytest.raises(ValueError, match="block_tables must be int32"):
        paged_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables.long(),
            batch.query_start_loc, batch.seq_lens,
        )  # fmt: skip
