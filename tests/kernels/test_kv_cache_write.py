"""write_kv_cache against its reference, and the write-then-attend path of one decode step."""

from __future__ import annotations

import pytest
import torch

from triage_router.kernels.kv_cache_write import write_kv_cache, write_kv_cache_reference
from triage_router.kernels.paged_attention import paged_attention
from triage_router.kernels.attention_reference import paged_attention_reference
from tests.kernels.paged_batches import DEVICE


@pytest.mark.parametrize(
    ("num_heads", "head_dim", "dtype"), [(3, 64, torch.float32), (8, 96, torch.float16), (1, 16, torch.float32)]
)
def test_write_matches_reference_and_skips_negative_slots(num_heads: int, head_dim: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(num_heads)
    num_blocks, block_size, tokens = 6, 16, 9
    cache_shape = (num_blocks, block_size, num_heads, head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(dtype)
    v_cache = torch.randn(cache_shape, generator=gen).to(dtype)
    key = torch.randn(tokens, num_heads, head_dim, generator=gen)  # fp32 in, cast to the cache dtype
    value = torch.randn(tokens, num_heads, head_dim, generator=gen)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens]
    slots[[2, 5]] = -1
    k_cache, v_cache, key, value, slots = (t.to(DEVICE) for t in (k_cache, v_cache, key, value, slots))
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    write_kv_cache_reference(key, value, expected_k, expected_v, slots)
    write_kv_cache(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device=DEVICE)
    untouched[slots[slots >= 0]] = False
    flat = k_cache.view(-1, num_heads, head_dim)
    assert torch.equal(flat[untouched], expected_k.view(-1, num_heads, head_dim)[untouched])


def test_strided_key_from_fused_qkv() -> None:
    # Engines often slice K and V out of one fused QKV projection: non-contiguous rows.
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(5, 3, 2, 32, generator=gen).to(DEVICE)
    key, value = qkv[:, 1], qkv[:, 2]
    k_cache = torch.zeros(2, 16, 2, 32, device=DEVICE)
    v_cache = torch.zeros(2, 16, 2, 32, device=DEVICE)
    slots = torch.tensor([0, 17, 31, 3, 16], dtype=torch.int32, device=DEVICE)
    write_kv_cache(key, value, k_cache, v_cache, slots)
    flat_k, flat_v = k_cache.view(-1, 2, 32), v_cache.view(-1, 2, 32)
    assert torch.equal(flat_k[slots.long()], key) and torch.equal(flat_v[slots.long()], value)


def test_decode_step_writes_then_attends() -> None:
    # One decode step of two sequences: append the new token's K/V, then attend over all of it.
    gen = torch.Generator().manual_seed(3)
    block_size, heads, dim = 16, 2, 32
    k_cache = torch.randn(4, block_size, heads, dim, generator=gen)
    v_cache = torch.randn(4, block_size, heads, dim, generator=gen)
    block_tables = torch.tensor([[2, 0], [3, 1]], dtype=torch.int32)
    seq_lens = torch.tensor([17, 5], dtype=torch.int32)  # after appending this step's token
    positions = seq_lens - 1
    slots = block_tables[torch.arange(2), positions // block_size] * block_size + positions % block_size
    key = torch.randn(2, heads, dim, generator=gen)
    value = torch.randn(2, heads, dim, generator=gen)
    q = torch.randn(2, heads * 3, dim, generator=gen)
    starts = torch.tensor([0, 1, 2], dtype=torch.int32)
    k_cache, v_cache, block_tables, seq_lens, slots, key, value, q, starts = (
        t.to(DEVICE) for t in (k_cache, v_cache, block_tables, seq_lens, slots, key, value, q, starts)
    )
    write_kv_cache(key, value, k_cache, v_cache, slots)
    out, _ = paged_attention(q, k_cache, v_cache, block_tables, starts, seq_lens)
    ref, _ = paged_attention_reference(q, k_cache, v_cache, block_tables, starts, seq_lens)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(k_cache[3, 4], key[1]) and torch.equal(k_cache[0, 0], key[0])
