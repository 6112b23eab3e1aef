"""Shared-prefix (cascade) attention equals plain paged attention on the same batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from triage_router.kernels.attention_reference import paged_attention_reference
from triage_router.kernels.prefix_groups import describe_prefix_groups, group_by_shared_blocks
from triage_router.kernels.shared_prefix_attention import shared_prefix_attention
from tests.kernels.paged_batches import DEVICE, TOLERANCE, PagedBatch, make_batch


def run_and_compare(
    batch: PagedBatch,
    groups: Sequence[tuple[Sequence[int], int]],
    dtype: torch.dtype,
    num_prefix_splits: int | None = None,
) -> None:
    described = describe_prefix_groups(
        groups, batch.query_start_loc.tolist(), batch.seq_lens.tolist(), DEVICE,
        block_tables=batch.block_tables.cpu(), block_size=batch.k_cache.shape[1],
    )  # fmt: skip
    out, lse = shared_prefix_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc,
        batch.seq_lens, described, num_prefix_splits=num_prefix_splits,
    )  # fmt: skip
    ref_out, ref_lse = paged_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens
    )
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref_out.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("group", "dtype", "num_prefix_splits"),
    [(1, torch.float32, 1), (3, torch.float16, 2), (8, torch.float32, 3), (3, torch.float32, None)],
)
def test_decode_batch_sharing_one_prefix(group: int, dtype: torch.dtype, num_prefix_splits: int | None) -> None:
    # Five decoding requests share 48 prefix tokens (3 blocks), then diverge for 1-20 tokens.
    seq_lens = [49, 60, 68, 50, 55]
    batch = make_batch(
        seed=group, query_lens=[1] * 5, seq_lens=seq_lens, num_kv_heads=2, group=group,
        head_dim=64, block_size=16, dtype=dtype, shared_prefixes=[([0, 1, 2, 3, 4], 48)],
    )  # fmt: skip
    run_and_compare(batch, [([0, 1, 2, 3, 4], 48)], dtype, num_prefix_splits)


def test_several_groups_mixed_with_loners_and_edge_cases() -> None:
    # seq 0-2: group A (32-token prefix), seq 2 is a chunked prefill whose first rows lie inside
    #   the prefix; seq 3: ungrouped; seq 4: a group of one; seq 5-6: group C with a zero-length
    #   prefix; seq 7-8: group D whose prefix is the whole sequence (empty suffix).
    query_lens = [1, 2, 10, 3, 1, 1, 2, 1, 1]
    seq_lens = [40, 45, 40, 20, 35, 18, 9, 32, 32]
    shared = [([0, 1, 2], 32), ([4], 32), ([7, 8], 32)]
    batch = make_batch(
        seed=42, query_lens=query_lens, seq_lens=seq_lens, num_kv_heads=1, group=3,
        head_dim=32, block_size=16, dtype=torch.float32, shared_prefixes=shared,
    )  # fmt: skip
    groups = [([0, 1, 2], 32), ([4], 32), ([5, 6], 0), ([7, 8], 32)]
    run_and_compare(batch, groups, torch.float32, num_prefix_splits=2)


@pytest.mark.parametrize(("head_dim", "block_size"), [(96, 32), (128, 16)])
def test_head_dims_and_block_sizes(head_dim: int, block_size: int) -> None:
    batch = make_batch(
        seed=head_dim, query_lens=[1, 1, 4], seq_lens=[70, 65, 80], num_kv_heads=1, group=8,
        head_dim=head_dim, block_size=block_size, dtype=torch.float16,
        shared_prefixes=[([0, 1, 2], 64)],
    )  # fmt: skip
    run_and_compare(batch, [([0, 1, 2], 64)], torch.float16)


def test_no_groups_falls_back_to_plain_attention() -> None:
    batch = make_batch(
        seed=9, query_lens=[1, 3], seq_lens=[20, 30], num_kv_heads=2, group=1,
        head_dim=16, block_size=16, dtype=torch.float32,
    )  # fmt: skip
    run_and_compare(batch, [], torch.float32)


def test_groups_are_found_from_block_tables() -> None:
    shared = [([0, 2, 3], 32), ([1, 4], 16)]
    batch = make_batch(
        seed=8, query_lens=[1] * 6, seq_lens=[40, 20, 33, 50, 17, 30], num_kv_heads=1, group=1,
        head_dim=16, block_size=16, dtype=torch.float32, shared_prefixes=shared,
    )  # fmt: skip
    found = group_by_shared_blocks(batch.block_tables.tolist(), batch.seq_lens.tolist(), 16)
    assert sorted((sorted(m), p) for m, p in found) == [([0, 2, 3], 32), ([1, 4], 16)]
    run_and_compare(batch, found, torch.float32)


def test_describe_rejects_inconsistent_groups() -> None:
    batch = make_batch(
        seed=1, query_lens=[1, 1, 1], seq_lens=[40, 40, 10], num_kv_heads=1, group=1,
        head_dim=16, block_size=16, dtype=torch.float32, shared_prefixes=[([0, 1], 32)],
    )  # fmt: skip
    starts, lens = batch.query_start_loc.tolist(), batch.seq_lens.tolist()
    with pytest.raises(ValueError, match="two prefix groups"):
        describe_prefix_groups([([0, 1], 32), ([1], 16)], starts, lens)
    with pytest.raises(ValueError, match="exceeds"):
        describe_prefix_groups([([0, 2], 32)], starts, lens)
    with pytest.raises(ValueError, match="does not share"):
        describe_prefix_groups([([0, 2], 10)], starts, lens, block_tables=batch.block_tables, block_size=16)


def test_group_detection_caps_at_the_shortest_member_and_skips_loners() -> None:
    tables = [
        [7, 8, 9, 1],  # shares blocks 7, 8, 9 with the next row
        [7, 8, 9, 2],
        [7, 8, 3],  # shares 7, 8 only, and ends inside block 8
        [4, 5],  # alone: not a group
        [6],  # shares one block with the last row, below min_shared_blocks=2
        [6, 10],
    ]
    seq_lens = [60, 64, 20, 30, 10, 20]
    found = group_by_shared_blocks(tables, seq_lens, 16, min_shared_blocks=2)
    # Grouped by first block: {0, 1, 2} share 2 blocks, capped at sequence 2's 20 tokens.
    assert found == [([0, 1, 2], 20)]
    assert group_by_shared_blocks(tables, seq_lens, 16) == [([0, 1, 2], 20), ([4, 5], 10)]
