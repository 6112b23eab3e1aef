"""Paged attention over block tables: one kernel for prefill, chunked prefill and decode.

Layout (docs/design/kernels.md has the full contract):

- ``q``: ``[num_tokens, num_q_heads, head_dim]``, the step's query tokens of all sequences packed
  back to back; sequence ``s`` owns rows ``query_start_loc[s]:query_start_loc[s + 1]``.
- ``k_cache`` / ``v_cache``: ``[num_blocks, block_size, num_kv_heads, head_dim]``.
- ``block_tables``: int32 ``[num_seqs, max_blocks_per_seq]``; token ``t`` of sequence ``s``
  lives in block ``block_tables[s, t // block_size]`` at slot ``t % block_size``.
- ``seq_lens``: int32 ``[num_seqs]``, KV length *including* this step's tokens, whose K/V must
  already be in the cache. The queries are the last ``q_len`` positions of the sequence.

Each program owns ``BLOCK_Q`` query tokens of one sequence times the ``GROUP`` query heads that
share one KV head (GQA). Those ``BLOCK_M = BLOCK_Q * GROUP`` rows form the M dimension of
``tl.dot``, so each K/V tile is loaded once for the whole head group.

The kernel also returns the log-sum-exp of every row (natural log, see ``merge_states``) and can
split the KV range of each row into ``num_splits`` partial states, which is how split-KV decode
and the suffix half of shared-prefix attention reuse it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from triage_router.kernels.launch_config import tuned

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def find_owner(starts_ptr, tile_idx, num_owners, BLOCK_Q: tl.constexpr):
    """Binary search: the owner (sequence or group) whose tiles include global tile ``tile_idx``.

    Owner ``i`` has rows ``starts[i]:starts[i + 1]`` and its tiles begin at global tile
    ``starts[i] // BLOCK_Q + i``; the ``+ i`` gives each owner room for a partial last tile, so
    the grid size ``num_rows // BLOCK_Q + num_owners`` is known without reading lengths on the
    host (no device sync).
    """
    # Annotated so both are int32 tensors from the start: a launch specialises an argument equal
    # to 1 into a constant, and a constant cannot be reassigned inside the loop.
    lo: tl.int32 = 0
    hi: tl.int32 = num_owners
    while lo < hi:
        mid = (lo + hi) // 2
        first_tile = tl.load(starts_ptr + mid) // BLOCK_Q + mid
        if first_tile <= tile_idx:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def attend_paged_range(
    acc,
    m_i,
    l_i,
    q,
    q_pos,
    k_cache_ptr,
    v_cache_ptr,
    block_table_row_ptr,
    kv_head,
    kv_lo,
    kv_hi,
    qk_scale,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_vd,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Fold KV positions ``[kv_lo, kv_hi)`` of one sequence into an online-softmax state.

    ``acc`` [BLOCK_M, HEAD_DIM_PAD] is the unnormalised output, ``m_i`` the running row max and
    ``l_i`` the running row sum, both in base 2 (scores are pre-multiplied by log2(e) so the
    inner loop uses ``exp2``). Causality: a row sees key positions ``<= q_pos``.
    """
    offs_n = tl.arange(0, TILE_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    for start in range(kv_lo, kv_hi, TILE_N):
        kv_pos = start + offs_n
        kv_valid = kv_pos < kv_hi
        # A tile may span several cache blocks: look up the block of every position.
        block = tl.load(block_table_row_ptr + kv_pos // BLOCK_SIZE, mask=kv_valid, other=0)
        slot = kv_pos % BLOCK_SIZE
        block = block.to(tl.int64)  # num_blocks * block stride can exceed 2**31 elements
        k_off = block * stride_kb + slot * stride_kt + kv_head * stride_kh
        v_off = block * stride_vb + slot * stride_vt + kv_head * stride_vh
        k = tl.load(
            k_cache_ptr + k_off[None, :] + offs_d[:, None] * stride_kd,
            mask=kv_valid[None, :] & d_mask[:, None],
            other=0.0,
        )  # [HEAD_DIM_PAD, TILE_N]
        v = tl.load(
            v_cache_ptr + v_off[:, None] + offs_d[None, :] * stride_vd,
            mask=kv_valid[:, None] & d_mask[None, :],
            other=0.0,
        )  # [TILE_N, HEAD_DIM_PAD]

        s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        visible = kv_valid[None, :] & (kv_pos[None, :] <= q_pos[:, None])
        s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row that has seen no key yet keeps m = -inf; subtract 0 instead to avoid inf - inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def finish_state(acc, m_i, l_i):
    """Normalise an online-softmax state; return (output, natural-log LSE). Empty rows: (0, -inf)."""
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    return out, lse


@tuned(gpu_configs=[(4, 2), (4, 3), (8, 2), (8, 3)], key=["HEAD_DIM", "GROUP", "BLOCK_M", "TILE_N"])
@triton.jit
def _paged_attention_kernel(
    out_ptr,
    lse_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    query_start_loc_ptr,
    seq_lens_ptr,
    kv_starts_ptr,
    qk_scale,
    num_seqs,
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
    HAS_KV_STARTS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile_idx = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)

    seq = find_owner(query_start_loc_ptr, tile_idx, num_seqs, BLOCK_Q)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    tile_in_seq = tile_idx - (q_start // BLOCK_Q + seq)
    if tile_in_seq * BLOCK_Q >= q_len:
        return  # spare tile of the grid's upper bound

    seq_len = tl.load(seq_lens_ptr + seq)
    context_len = seq_len - q_len

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    q_in_seq = tile_in_seq * BLOCK_Q + offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    row_valid = (offs_m // GROUP < BLOCK_Q) & (q_in_seq < q_len)
    token = (q_start + q_in_seq).to(tl.int64)
    q_pos = context_len + q_in_seq

    q = tl.load(
        q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
        mask=row_valid[:, None] & d_mask[None, :],
        other=0.0,
    )

    # KV range of this tile: from kv_start (suffix-only attention) up to the last row's position.
    kv_lo = 0
    if HAS_KV_STARTS:
        kv_lo = tl.load(kv_starts_ptr + seq)
    last_q = tl.minimum(q_len, (tile_in_seq + 1) * BLOCK_Q) - 1
    kv_hi = tl.minimum(seq_len, context_len + last_q + 1)
    # This split's share, aligned to TILE_N so splits never share a tile.
    per_split = tl.cdiv(tl.cdiv(tl.maximum(kv_hi - kv_lo, 0), num_splits), TILE_N) * TILE_N
    split_lo = kv_lo + split * per_split
    split_hi = tl.minimum(split_lo + per_split, kv_hi)

    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc, m_i, l_i = attend_paged_range(
        acc, m_i, l_i, q, q_pos,
        k_cache_ptr, v_cache_ptr, block_tables_ptr + seq * stride_bt, kv_head,
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


def row_tiles(group: int, rows_per_owner: int | None) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_Q): rows per program and query tokens per program for a GQA group size.

    ``tl.dot`` needs M >= 16. Decode-like work (a token or two per owner) uses the smallest tile
    so few rows are padding; longer query runs use 64 rows for tensor-core efficiency. Tiles do
    not depend on the interpreter, so the CPU tests run the GPU's tile shapes.
    """
    block_m = max(16, triton.next_power_of_2(group))
    if rows_per_owner is None or rows_per_owner * group > block_m:
        block_m = max(64, block_m)
    return block_m, block_m // group


def kv_tile(head_dim_pad: int) -> int:
    """Keys per inner-loop iteration; a tile may span several cache blocks (positions are gathered)."""
    return 64 if head_dim_pad <= 128 else 32


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 tl.dot defaults to TF32 on NVIDIA GPUs; an fp32 caller asked for fp32 accuracy.
    return "ieee" if dtype == torch.float32 else "tf32"


def check_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, int]:
    """Validate the shapes shared by every attention kernel; return (group size, block size)."""
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            "expected q [tokens, q_heads, head_dim] and k/v caches "
            f"[blocks, block_size, kv_heads, head_dim]; got {tuple(q.shape)}, "
            f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
        )
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    _, block_size, num_kv_heads, cache_head_dim = k_cache.shape
    if cache_head_dim != head_dim or num_q_heads % num_kv_heads != 0:
        raise ValueError(
            f"q has {num_q_heads} heads of dim {head_dim}; the cache has {num_kv_heads} heads of dim "
            f"{cache_head_dim} (q heads must be a multiple of kv heads)"
        )
    if q.dtype != k_cache.dtype or k_cache.dtype != v_cache.dtype:
        raise ValueError(f"dtype mismatch: q {q.dtype}, k_cache {k_cache.dtype}, v_cache {v_cache.dtype}")
    return num_q_heads // num_kv_heads, block_size


def check_int32(**tensors: torch.Tensor | None) -> None:
    """Index tensors are read as int32: an int64 table would be misread silently, so refuse it."""
    for name, t in tensors.items():
        if t is not None and t.dtype != torch.int32:
            raise ValueError(f"{name} must be int32, got {t.dtype}")


def paged_attention_partials(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    kv_starts: torch.Tensor | None = None,
    max_query_len: int | None = None,
) -> None:
    """Write ``out.shape[0]`` partial states, each over one share of every row's KV range.

    ``out``: ``[num_splits, num_tokens, num_q_heads, head_dim]`` (any float dtype; fp32 keeps
    partials exact), ``lse``: fp32 ``[num_splits, num_tokens, num_q_heads]``. A split whose
    share is empty for a row writes output 0 and LSE -inf there.
    """
    group, block_size = check_cache(q, k_cache, v_cache)
    check_int32(block_tables=block_tables, query_start_loc=query_start_loc, seq_lens=seq_lens, kv_starts=kv_starts)
    num_splits, num_tokens, num_q_heads, head_dim = out.shape
    num_seqs = seq_lens.shape[0]
    num_kv_heads = k_cache.shape[2]
    if num_tokens == 0 or num_seqs == 0:
        return
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    block_m, block_q = row_tiles(group, max_query_len)
    grid = (num_tokens // block_q + num_seqs, num_kv_heads, num_splits)
    _paged_attention_kernel[grid](
        out, lse, q, k_cache, v_cache, block_tables, query_start_loc, seq_lens,
        kv_starts if kv_starts is not None else seq_lens,  # unused when HAS_KV_STARTS is False
        scale * LOG2E, num_seqs,
        *out.stride(), *lse.stride(), *q.stride(), *k_cache.stride(), *v_cache.stride(),
        block_tables.stride(0),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, GROUP=group, BLOCK_M=block_m,
        BLOCK_Q=block_q, BLOCK_SIZE=block_size, TILE_N=kv_tile(head_dim_pad),
        HAS_KV_STARTS=kv_starts is not None, DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    *,
    kv_starts: torch.Tensor | None = None,
    max_query_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of packed queries over their sequences' paged KV.

    Returns ``(out, lse)``: ``out`` like ``q``; ``lse`` fp32 ``[num_tokens, num_q_heads]``,
    the natural-log log-sum-exp of each row's scaled scores (-inf for a row that saw no key).
    ``kv_starts`` (int32 ``[num_seqs]``) restricts sequence ``s`` to key positions
    ``>= kv_starts[s]``. ``max_query_len``, when the caller knows it, picks a smaller tile for
    decode batches.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    paged_attention_partials(
        q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
        out.unsqueeze(0), lse.unsqueeze(0), kv_starts=kv_starts, max_query_len=max_query_len,
    )  # fmt: skip
    return out, lse
