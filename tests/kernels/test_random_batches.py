"""Seeded random batches through paged and shared-prefix attention: shapes nobody hand-picked."""

from __future__ import annotations

import os
import random

import pytest
import torch

from triage_router.kernels.paged_attention import paged_attention
from triage_router.kernels.attention_reference import paged_attention_reference
from triage_router.kernels.prefix_groups import describe_prefix_groups
from triage_router.kernels.shared_prefix_attention import shared_prefix_attention
from tests.kernels.paged_batches import DEVICE, DTYPES, TOLERANCE, make_batch

# Six seeds keep the suite quick; TRIAGE_KERNEL_SEEDS=200 fuzzes harder after a kernel change.
SEEDS = int(os.environ.get("TRIAGE_KERNEL_SEEDS", "6"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_batch(seed: int) -> None:
    rng = random.Random(seed)
    block_size = rng.choice([16, 32])
    group = rng.choice([1, 3, 8])
    head_dim = rng.choice([16, 32, 64])
    dtype = rng.choice(DTYPES)
    num_seqs = rng.randint(2, 6)
    query_lens = [rng.choice([0, 1, 1, 2, rng.randint(1, 9)]) for _ in range(num_seqs)]
    seq_lens = [ql + rng.randint(0, 2 * block_size + 5) for ql in query_lens]
    seq_lens = [max(sl, 1) for sl in seq_lens]  # a zero-query sequence still has some KV

    # Random groups: disjoint member sets, prefix a multiple of the block size within every member.
    order = list(range(num_seqs))
    rng.shuffle(order)
    groups = []
    while order and rng.random() < 0.8:
        members = [order.pop() for _ in range(min(len(order), rng.randint(1, 3)))]
        longest = min(seq_lens[s] for s in members) // block_size
        groups.append((members, block_size * rng.randint(0, longest)))

    batch = make_batch(
        seed=seed, query_lens=query_lens, seq_lens=seq_lens, num_kv_heads=rng.choice([1, 2]),
        group=group, head_dim=head_dim, block_size=block_size, dtype=dtype, shared_prefixes=groups,
    )  # fmt: skip
    args = (batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.query_start_loc, batch.seq_lens)
    ref_out, ref_lse = paged_attention_reference(*args)
    described = describe_prefix_groups(groups, batch.query_start_loc.tolist(), seq_lens, DEVICE)
    tol = TOLERANCE[dtype]
    cascade = shared_prefix_attention(*args, described, num_prefix_splits=rng.randint(1, 3))
    for out, lse in [paged_attention(*args), cascade]:
        torch.testing.assert_close(out.float(), ref_out.float(), atol=tol, rtol=tol)
        torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
