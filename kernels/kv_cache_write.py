"""Write a step's new K/V rows into the paged cache.

``slot_mapping[t]`` is the flat slot of token ``t``: ``block_id * block_size + offset``. A
negative slot means "do not store" (padding rows of a CUDA-graph batch, or tokens whose KV
already sits in a shared prefix block). Attention kernels read the cache after this ran, so
the step's own tokens are visible to themselves.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triage_router.kernels.launch_config import tuned


@tuned(gpu_configs=[(1, 1), (2, 1), (4, 1)], key=["BLOCK_H", "BLOCK_D"], interpreter_config=(1, 1))
@triton.jit
def _kv_cache_write_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    num_heads,
    head_dim,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_kcb,
    stride_kct,
    stride_kch,
    stride_kcd,
    stride_vcb,
    stride_vct,
    stride_vch,
    stride_vcd,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h[:, None] < num_heads) & (offs_d[None, :] < head_dim)

    k = tl.load(key_ptr + token * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :] * stride_kd, mask=mask)
    v = tl.load(value_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :] * stride_vd, mask=mask)
    kc = k_cache_ptr + block * stride_kcb + offset * stride_kct
    vc = v_cache_ptr + block * stride_vcb + offset * stride_vct
    k_dst = kc + offs_h[:, None] * stride_kch + offs_d[None, :] * stride_kcd
    v_dst = vc + offs_h[:, None] * stride_vch + offs_d[None, :] * stride_vcd
    tl.store(k_dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store ``key``/``value`` ``[num_tokens, num_kv_heads, head_dim]`` at their slots.

    ``slot_mapping``: int32/int64 ``[num_tokens]``, negative to skip a row.

    Caches are ``[num_blocks, block_size, num_kv_heads, head_dim]`` and updated in place; values
    are cast to the cache dtype.
    """
    if key.shape != value.shape or key.dim() != 3 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"bad shapes: key {tuple(key.shape)}, value {tuple(value.shape)}, cache {tuple(k_cache.shape)}"
        )
    if key.shape[1:] != k_cache.shape[2:] or slot_mapping.shape != key.shape[:1]:
        raise ValueError(
            f"key {tuple(key.shape)} does not fit cache {tuple(k_cache.shape)} "
            f"with slot_mapping {tuple(slot_mapping.shape)}"
        )
    num_tokens, num_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    _kv_cache_write_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping, num_heads, head_dim,
        *key.stride(), *value.stride(), *k_cache.stride(), *v_cache.stride(),
        BLOCK_SIZE=k_cache.shape[1], BLOCK_H=triton.next_power_of_2(num_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
    )  # fmt: skip


def write_kv_cache_reference(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Torch reference of ``write_kv_cache``: the same in-place update through a flat view."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, *k_cache.shape[2:])[slots] = key[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = value[keep].to(v_cache.dtype)
