"""Shared-prefix (cascade) attention: read a group's common prefix KV once, not once per request.

When many requests share a long prompt prefix (a system prompt, few-shot examples, Parrot's
shared "prompt" across an application's calls), the plain paged kernel reads the prefix's KV
once per request. Here, as in Parrot's shared attention kernel and FlashInfer's cascade:

1. **Prefix pass.** For each prefix group, the queries of *all* its members become the rows of
   one ``tl.dot`` (query tokens x the GQA heads of one KV head), so each prefix K/V tile is
   loaded once per group per row tile. Long prefixes are also split along the keys, like
   split-KV decode, so a single group still fills the GPU.
2. **Suffix pass.** The plain paged kernel, restricted per sequence to keys from
   ``suffix_starts`` on (everything after its group's prefix; the whole sequence if ungrouped).
3. **Merge.** ``merge_states`` combines the partials by log-sum-exp.

Unlike Parrot (one shared prefix per batch), a batch carries any number of groups
(``triage_router.kernels.prefix_groups``). The result is exact: it equals ``paged_attention`` on the same
batch, which is therefore this kernel's reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from triage_router.kernels.launch_config import tuned
from triage_router.kernels.merge_states import merge_states
from triage_router.kernels.paged_attention import (
    LOG2E,
    attend_paged_range,
    check_cache,
    check_int32,
    dot_precision,
    find_owner,
    finish_state,
    kv_tile,
    paged_attention_partials,
)
from triage_router.kernels.prefix_groups import PrefixGroups
from triage_router.kernels.split_kv_decode import MAX_SPLITS, MIN_KEYS_PER_SPLIT, streaming_multiprocessors


@tuned(gpu_configs=[(4, 2), (4, 3), (8, 2), (8, 3)], key=["HEAD_DIM", "GROUP", "BLOCK_M", "TILE_N"])
@triton.jit
def _shared_prefix_kernel(
    out_ptr,
    lse_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    prefix_lens_ptr,
    leaders_ptr,
    query_rows_ptr,
    query_positions_ptr,
    row_starts_ptr,
    qk_scale,
    num_groups,
    stride_os,
    stride_ot,
    stride_oh,
    stride_od,
    stride_ls,
    stride_lt,
    stride_lh,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_bt,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile_idx = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)

    g = find_owner(row_starts_ptr, tile_idx, num_groups, BLOCK_Q)
    row_start = tl.load(row_starts_ptr + g)
    num_rows = tl.load(row_starts_ptr + g + 1) - row_start
    tile_in_group = tile_idx - (row_start // BLOCK_Q + g)
    if tile_in_group * BLOCK_Q >= num_rows:
        return  # spare tile of the grid's upper bound

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    r_in_group = tile_in_group * BLOCK_Q + offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    row_valid = (offs_m // GROUP < BLOCK_Q) & (r_in_group < num_rows)
    # Rows of one tile may come from different member sequences: gather them by index.
    token = tl.load(query_rows_ptr + row_start + r_in_group, mask=row_valid, other=0).to(tl.int64)
    q_pos = tl.load(query_positions_ptr + row_start + r_in_group, mask=row_valid, other=0)
    q = tl.load(
        q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
        mask=row_valid[:, None] & d_mask[None, :],
        other=0.0,
    )

    # Causal masking still applies (a member's chunked-prefill rows may sit inside the prefix),
    # and no row of this tile needs keys past its largest position.
    prefix_len = tl.load(prefix_lens_ptr + g)
    kv_hi = tl.minimum(prefix_len, tl.max(tl.where(row_valid, q_pos, 0), axis=0) + 1)
    per_split = tl.cdiv(tl.cdiv(kv_hi, num_splits), TILE_N) * TILE_N
    split_lo = split * per_split
    split_hi = tl.minimum(split_lo + per_split, kv_hi)
    leader = tl.load(leaders_ptr + g)

    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc, m_i, l_i = attend_paged_range(
        acc, m_i, l_i, q, q_pos,
        k_cache_ptr, v_cache_ptr, block_tables_ptr + leader * stride_bt, kv_head,
        split_lo, split_hi, qk_scale,
        stride_kb, stride_kt, stride_kh, stride_kd,
        stride_vb, stride_vt, stride_vh, stride_vd,
        HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, TILE_N, DOT_PRECISION,
    )  # fmt: skip
    out, lse = finish_state(acc, m_i, l_i)

    o_ptrs = out_ptr + split * stride_os + token[:, None] * stride_ot + head[:, None] * stride_oh
    tl.store(
        o_ptrs + offs_d[None, :] * stride_od,
        out.to(out_ptr.dtype.element_ty),
        mask=row_valid[:, None] & d_mask[None, :],
    )
    tl.store(lse_ptr + split * stride_ls + token * stride_lt + head * stride_lh, lse, mask=row_valid)


def prefix_row_tiles(group: int, rows_per_group: int, head_dim_pad: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_Q) for the prefix pass: as many rows per tile as registers allow.

    Every row tile re-reads the prefix, so large groups get 128-row tiles (head dims up to 128).
    """
    block_m = max(16, triton.next_power_of_2(group))
    rows = rows_per_group * group
    if rows > 64 and head_dim_pad <= 128:
        block_m = max(128, block_m)
    elif rows > 16:
        block_m = max(64, block_m)
    return block_m, block_m // group


def prefix_splits(programs: int, max_prefix_len: int, num_sms: int) -> int:
    """Key splits of the prefix pass: about two waves of programs, shares of >= MIN_KEYS_PER_SPLIT keys."""
    wanted = triton.cdiv(2 * num_sms, max(1, programs))
    return max(1, min(wanted, max(1, max_prefix_len // MIN_KEYS_PER_SPLIT), MAX_SPLITS))


def shared_prefix_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    groups: PrefixGroups,
    scale: float | None = None,
    *,
    num_prefix_splits: int | None = None,
    max_query_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of a batch whose sequences share prefixes as ``groups`` describes.

    Arguments and result are those of ``paged_attention`` plus ``groups``
    (``triage_router.kernels.prefix_groups.describe_prefix_groups``). ``num_prefix_splits`` overrides how
    many key shares the prefix pass cuts each group's prefix into.
    """
    group, block_size = check_cache(q, k_cache, v_cache)
    check_int32(block_tables=block_tables, query_start_loc=query_start_loc, seq_lens=seq_lens)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    block_m, block_q = prefix_row_tiles(group, groups.max_rows_per_group, head_dim_pad)
    num_rows = int(groups.query_rows.shape[0])
    grid_rows = num_rows // block_q + groups.num_groups
    if num_prefix_splits is None:
        row_tiles = groups.num_groups * triton.cdiv(max(1, groups.max_rows_per_group), block_q)
        num_prefix_splits = prefix_splits(
            row_tiles * num_kv_heads, groups.max_prefix_len, streaming_multiprocessors(q.device)
        )

    # Partials 0..S-1: the prefix pass (rows outside every group keep LSE -inf, weight 0);
    # partial S: the suffix pass, written for every row.
    partials = torch.empty((num_prefix_splits + 1, *q.shape), dtype=torch.float32, device=q.device)
    partial_lse = torch.full(
        (num_prefix_splits + 1, num_tokens, num_q_heads), float("-inf"), dtype=torch.float32, device=q.device
    )
    if num_rows > 0:
        _shared_prefix_kernel[(grid_rows, num_kv_heads, num_prefix_splits)](
            partials, partial_lse, q, k_cache, v_cache, block_tables,
            groups.prefix_lens, groups.leaders, groups.query_rows, groups.query_positions,
            groups.row_starts, scale * LOG2E, groups.num_groups,
            *partials.stride(), *partial_lse.stride(), *q.stride(), *k_cache.stride(),
            *v_cache.stride(), block_tables.stride(0),
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, GROUP=group, BLOCK_M=block_m,
            BLOCK_Q=block_q, BLOCK_SIZE=block_size, TILE_N=kv_tile(head_dim_pad),
            DOT_PRECISION=dot_precision(q.dtype),
        )  # fmt: skip
    paged_attention_partials(
        q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
        partials[num_prefix_splits:], partial_lse[num_prefix_splits:],
        kv_starts=groups.suffix_starts, max_query_len=max_query_len,
    )  # fmt: skip
    return merge_states(partials, partial_lse, out_dtype=q.dtype)
