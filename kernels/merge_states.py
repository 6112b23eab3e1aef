"""Merge partial attention states by their log-sum-exp.

A *state* of one query row over a set of keys K is the pair ``(v, s)``:

- ``v = sum_k softmax_K(x)_k * V_k``, the attention output restricted to K, and
- ``s = ln(sum_k exp(x_k))``, the log-sum-exp of the scaled scores ``x_k = scale * q . k``.

**Log base: natural (base e)**, the same as ``torch.logsumexp``. (FlashInfer stores base 2; our
kernels compute in base 2 internally and convert before they store.) States over disjoint key
sets K_1..K_n merge exactly into the state over their union:

    s = ln(sum_i exp(s_i)),   v = sum_i exp(s_i - s) * v_i

An empty partial (no keys: a split past the end of a short sequence, an empty suffix) has
``s = -inf`` and weight 0, whatever its ``v`` holds, even NaN. If every partial of a row is
empty the merged row is ``(0, -inf)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triage_router.kernels.launch_config import tuned


@tuned(gpu_configs=[(1, 1), (2, 1), (4, 1)], key=["BLOCK_H", "BLOCK_D"], interpreter_config=(1, 1))
@triton.jit
def _merge_states_kernel(
    out_ptr,
    out_lse_ptr,
    v_ptr,
    s_ptr,
    num_states,
    num_heads,
    head_dim,
    stride_vs,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_ss,
    stride_st,
    stride_sh,
    stride_ot,
    stride_oh,
    stride_od,
    stride_lt,
    stride_lh,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (token, block of heads); the states are a short loop.
    token = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    h_mask = offs_h < num_heads
    vd_mask = h_mask[:, None] & (offs_d[None, :] < head_dim)

    s_row = s_ptr + token * stride_st + offs_h * stride_sh
    s_max = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    for i in range(num_states):
        s_max = tl.maximum(s_max, tl.load(s_row + i * stride_ss, mask=h_mask, other=float("-inf")))
    s_ref = tl.where(s_max == float("-inf"), 0.0, s_max)  # all empty: avoid -inf - -inf

    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    total = tl.zeros([BLOCK_H], dtype=tl.float32)
    v_rows = v_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :] * stride_vd
    for i in range(num_states):
        s_i = tl.load(s_row + i * stride_ss, mask=h_mask, other=float("-inf"))
        w = tl.math.exp2((s_i - s_ref) * 1.4426950408889634)
        v_i = tl.load(v_rows + i * stride_vs, mask=vd_mask, other=0.0).to(tl.float32)
        # Weight 0 must win over whatever an empty partial left in v (even NaN): 0 * NaN = NaN.
        acc += tl.where(w[:, None] > 0.0, v_i, 0.0) * w[:, None]
        total += w

    empty = total == 0.0
    out = acc / tl.where(empty, 1.0, total)[:, None]
    lse = tl.where(empty, float("-inf"), s_ref + tl.log(tl.where(empty, 1.0, total)))
    o_ptrs = out_ptr + token * stride_ot + offs_h[:, None] * stride_oh + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=vd_mask)
    tl.store(out_lse_ptr + token * stride_lt + offs_h * stride_lh, lse, mask=h_mask)


def merge_states(
    v: torch.Tensor,
    s: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``n`` partial states per row into one.

    ``v``: ``[n, num_tokens, num_heads, head_dim]`` (any float dtype, any strides);
    ``s``: fp32 ``[n, num_tokens, num_heads]``, natural-log LSE. Returns ``(out, lse)`` with
    ``out`` ``[num_tokens, num_heads, head_dim]`` in ``out_dtype`` (default ``v.dtype``) or
    written into ``out``, and ``lse`` fp32 ``[num_tokens, num_heads]``.
    """
    if v.dim() != 4 or s.shape != v.shape[:3] or s.dtype != torch.float32:
        raise ValueError(
            f"expected v [n, tokens, heads, head_dim] and fp32 s [n, tokens, heads]; "
            f"got v {tuple(v.shape)}, s {tuple(s.shape)} {s.dtype}"
        )
    num_states, num_tokens, num_heads, head_dim = v.shape
    if out is None:
        out = torch.empty(v.shape[1:], dtype=out_dtype or v.dtype, device=v.device)
    lse = torch.empty(v.shape[1:3], dtype=torch.float32, device=v.device)
    if num_tokens == 0 or num_heads == 0:
        return out, lse
    if num_states == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_h = min(triton.next_power_of_2(num_heads), max(1, 4096 // block_d))
    grid = (num_tokens, triton.cdiv(num_heads, block_h))
    _merge_states_kernel[grid](
        out, lse, v, s, num_states, num_heads, head_dim,
        *v.stride(), *s.stride(), *out.stride(), *lse.stride(),
        BLOCK_H=block_h, BLOCK_D=block_d,
    )  # fmt: skip
    return out, lse


def merge_states_reference(v: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of ``merge_states``, in fp32."""
    lse = torch.logsumexp(s, dim=0)
    weights = torch.exp(s - lse).nan_to_num(0.0)  # rows with every state empty: -inf - -inf
    terms = torch.where(weights[..., None] > 0, v.float() * weights[..., None], 0.0)
    return terms.sum(dim=0), lse
