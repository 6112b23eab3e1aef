"""cpu_ops' C++ kernels against torch on random paged layouts, and the torch fallback when the
extension cannot be built."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from triage_router.engine_server import cpu_ops
from triage_router.engine_server.attention import AttentionMetadata, TorchPagedAttention

ops = cpu_ops.ops()
# Only a machine without a toolchain may skip: there the engine runs its torch path by design.
# Where a compiler exists the ops must build, and these tests fail if they did not.
HAS_COMPILER = shutil.which("c++") is not None
needs_ops = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on this machine")

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def paged_case(dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int, block_size: int, seed: int):
    """Ragged contexts (partial last blocks, a 1-token one), blocks scattered at random."""
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor([1, block_size, block_size + 1, 3 * block_size - 5, 77, 5 * block_size])
    n, width = len(lens), -(-int(lens.max()) // block_size)
    num_blocks = n * width + 3
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    tables = torch.randperm(num_blocks, generator=gen)[: n * width].view(n, width)
    # q as the model passes it: a strided slice of a joint q/k tensor.
    qk = torch.randn(n, heads + kv_heads, head_dim, generator=gen).to(dtype)
    return qk[:, :heads], kv_cache, tables, lens


def reference(q, kv_cache, tables, lens):
    """Per sequence: gather its context and run SDPA in fp32."""
    n, heads, head_dim = q.shape
    kv_heads = kv_cache.shape[3]
    out = []
    for i in range(n):
        k = kv_cache[0, tables[i]].reshape(-1, kv_heads, head_dim)[: lens[i]].float()
        v = kv_cache[1, tables[i]].reshape(-1, kv_heads, head_dim)[: lens[i]].float()
        o = F.scaled_dot_product_attention(
            q[i].float().unsqueeze(1), k.transpose(0, 1), v.transpose(0, 1), enable_gqa=True
        )
        out.append(o.squeeze(1))
    return torch.stack(out)


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# Group sizes 1 and 3 have compiled-in fast paths, 7 the run-time one, 12 the generic kernel;
# blocks of 8, 16 and 32 tokens against the fast path's 16-token tiles.
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (9, 3), (14, 2), (12, 1)])
@pytest.mark.parametrize("head_dim,block_size", [(64, 16), (64, 32), (64, 8), (40, 16), (128, 32)])
def test_paged_decode_attention_matches_sdpa(dtype, heads, kv_heads, head_dim, block_size):
    q, kv_cache, tables, lens = paged_case(dtype, heads, kv_heads, head_dim, block_size, seed=head_dim + heads)
    for index_dtype in (torch.int64, torch.int32):
        got = ops.paged_decode_attention(
            q, kv_cache[0], kv_cache[1], tables.to(index_dtype), lens.to(index_dtype), head_dim**-0.5
        )
        assert got.dtype == dtype and got.shape == q.shape
        torch.testing.assert_close(got.float(), reference(q, kv_cache, tables, lens), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def decode_meta(tables: torch.Tensor, lens: torch.Tensor, block_size: int, dtype: torch.dtype) -> AttentionMetadata:
    n, width = tables.shape
    allowed = torch.arange(width * block_size).unsqueeze(0) < lens.unsqueeze(1)
    mask = torch.zeros(n, 1, 1, width * block_size, dtype=dtype).masked_fill_(~allowed.view(n, 1, 1, -1), float("-inf"))
    return AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.long), num_decodes=n, decode_block_tables=tables, decode_mask=mask,
        decode_context_lens=lens,
    )


@pytest.mark.parametrize("available", [True, False])
def test_backend_bf16_decode_fused_or_fallback(monkeypatch, available):
    """The backend's bf16 decodes agree with the reference whether or not the extension exists."""
    if available and not HAS_COMPILER:
        pytest.skip("no C++ compiler on this machine")
    if not available:
        monkeypatch.setattr(cpu_ops, "ops", lambda: None)
    q, kv_cache, tables, lens = paged_case(torch.bfloat16, 9, 3, 64, 16, seed=1)
    meta = decode_meta(tables, lens, 16, torch.bfloat16)
    # Writing no new tokens (empty slot mapping) leaves the cache as the reference sees it.
    empty = torch.zeros(0, 3, 64, dtype=torch.bfloat16)
    got = TorchPagedAttention().forward(q, empty, empty, kv_cache, meta)
    torch.testing.assert_close(got.float(), reference(q, kv_cache, tables, lens), atol=2e-2, rtol=2e-2)


def test_the_extension_builds_wherever_a_compiler_exists():
    """The fallback is for machines without a toolchain, not a way to hide a broken build."""
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler on this machine")
    assert ops is not None


def test_failed_build_warns_once_and_returns_none(monkeypatch, caplog):
    def broken() -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpu_ops, "_build", broken)
    cpu_ops.ops.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="triage_router.engine_server.cpu_ops"):
            assert cpu_ops.ops() is None
            assert cpu_ops.ops() is None
        assert len(caplog.records) == 1 and "Ninja is required" in caplog.records[0].getMessage()
    finally:
        cpu_ops.ops.cache_clear()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("TRIAGE_CPU_OPS", "0")
    cpu_ops.ops.cache_clear()
    try:
        assert cpu_ops.ops() is None
    finally:
        cpu_ops.ops.cache_clear()


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 576), (33, 576), (2, 5, 64)])
def test_rms_norm_matches_torch(dtype, shape):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    w = torch.randn(shape[-1], generator=gen).to(dtype)
    got = ops.rms_norm(x, w, 1e-5)
    want = F.rms_norm(x.float(), (shape[-1],), w.float(), 1e-5)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.float(), want, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [1, 37])
def test_rotary_matches_torch(dtype, tokens):
    from triage_router.engine_server.rotary import RotaryEmbedding

    gen = torch.Generator().manual_seed(tokens)
    rope = RotaryEmbedding(64, 128, 10000.0, None)
    cos, sin = rope.lookup(torch.randint(0, 128, (tokens,), generator=gen), dtype)
    # q and k heads side by side in one projection row, as the model passes them.
    x = torch.randn(tokens, 16, 64, generator=gen).to(dtype)[:, :12]
    half = 32
    want = x.float() * cos.float() + torch.cat((x[..., half:], x[..., :half]), dim=-1).float() * sin.float()
    got = ops.rotary(x, cos, sin)
    assert got.dtype == dtype and got.shape == x.shape and got.is_contiguous()
    torch.testing.assert_close(got.float(), want.to(dtype).float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_kv_matches_index_copy(dtype):
    gen = torch.Generator().manual_seed(0)
    cache = torch.randn(2, 6, 4, 3, 64, generator=gen).to(dtype)
    # k and v as strided slices of one fused projection row.
    qkv = torch.randn(5, 9 + 3 + 3, 64, generator=gen).to(dtype)
    k, v = qkv[:, 9:12], qkv[:, 12:]
    slots = torch.tensor([3, 17, 0, 23, 8])
    want = cache.clone()
    want[0].view(-1, 3, 64).index_copy_(0, slots, k)
    want[1].view(-1, 3, 64).index_copy_(0, slots, v)
    ops.write_kv(k, v, cache[0], cache[1], slots)
    assert torch.equal(cache, want)
    with pytest.raises(RuntimeError, match="slot out of range"):
        ops.write_kv(k, v, cache[0], cache[1], torch.tensor([0, 1, 2, 3, 24]))


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_rows_first_index_of_the_max(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1000, generator=gen).to(dtype)
    x[1, 70] = x[1, 900] = 9  # a tie across chunks: the first wins, as in torch.max
    x[2, 130] = x[2, 131] = 9  # a tie inside a chunk
    x[3, -1] = 9  # the last element of a partial chunk
    x[4] = float("-inf")
    want = x.float().max(dim=-1).indices
    assert torch.equal(ops.argmax_rows(x), want)
    assert want[:4].tolist() == [want[0].item(), 70, 130, 999]


def test_greedy_tokens_from_bf16_logits_match_fp32_sampling():
    from triage_router.engine_server.sampling import greedy_tokens

    logits = torch.randn(7, 49152, generator=torch.Generator().manual_seed(1)).bfloat16()
    assert greedy_tokens(logits) == logits.float().max(dim=-1).indices.tolist()
