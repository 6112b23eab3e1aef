"""Paged attention over the KV cache: the seam where a CUDA/Triton kernel plugs in.

The model calls `AttentionBackend.forward` once per layer with the step's flattened tokens.
The torch backend here runs everywhere (CPU tests, the CPU server); a kernels/ backend only
has to honour the same metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from triage_router.engine_server import cpu_ops


@dataclass
class PrefillChunk:
    """One sequence's prompt chunk inside the flattened batch."""

    start: int  # offset of its first token in the flattened batch
    length: int  # tokens computed this step
    context_len: int  # tokens of this sequence already in the cache before this chunk
    block_table: torch.Tensor  # [n_blocks] covering context_len + length tokens
    mask: torch.Tensor | None = None  # additive [length, context_len + length]; None when context_len == 0


@dataclass
class AttentionMetadata:
    """Shared by every layer of one step. Decodes come first in the flattened batch."""

    slot_mapping: torch.Tensor  # [T] flat cache slot (block * block_size + offset) per token
    num_decodes: int = 0
    decode_block_tables: torch.Tensor | None = None  # [num_decodes, max_blocks]
    decode_mask: torch.Tensor | None = None  # additive (0 / -inf) [num_decodes, 1, 1, max_blocks * block_size]
    decode_context_lens: torch.Tensor | None = None  # [num_decodes], tokens each decode attends to
    prefills: list[PrefillChunk] = field(default_factory=list)
    # Packed form, built only for backends that ask for it (`packed = True`), e.g. kernels/:
    # every sequence of the step, in batch order, int32 on the device.
    block_tables: torch.Tensor | None = None  # [num_seqs, max_blocks]
    query_start_loc: torch.Tensor | None = None  # [num_seqs + 1]
    seq_lens: torch.Tensor | None = None  # [num_seqs] context after this step
    max_query_len: int = 0


class AttentionBackend(Protocol):
    packed: bool  # wants AttentionMetadata's packed fields

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q: [T, H, D]; k, v: [T, Hkv, D]; kv_cache: [2, num_blocks, block_size, Hkv, D]. Returns [T, H, D]."""
        ...


class TorchPagedAttention:
    """Writes the new keys/values into their slots, then attends with SDPA.

    Decodes are batched into one SDPA call: each one's blocks are gathered into a padded
    [n, Hkv, K, D] tensor and the padding is masked. With one query token per sequence the
    query heads that share a KV head fold into the query axis, so GQA costs no KV copy.
    Prefill chunks are few per step (the token budget bounds them) and run one SDPA each.

    bf16 decodes on the CPU go to cpu_ops' fused kernel instead when it builds: it reads K/V
    in place through the block tables, so no gathered copy, no padding, no mask.
    """

    packed = False

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        if kv_cache.device.type == "cpu" and (fused := cpu_ops.ops()) is not None:
            fused.write_kv(k, v, k_cache, v_cache, meta.slot_mapping)  # a byte copy: exact in any dtype
        else:
            flat_k = k_cache.view(num_blocks * block_size, kv_heads, head_dim)
            flat_v = v_cache.view(num_blocks * block_size, kv_heads, head_dim)
            flat_k.index_copy_(0, meta.slot_mapping, k)
            flat_v.index_copy_(0, meta.slot_mapping, v)

        n = meta.num_decodes
        if n:
            decoded = self._decode(q[:n], k_cache, v_cache, meta)
            if not meta.prefills:
                return decoded  # a decode-only step: no copy into a shared output
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        if n:
            out[:n] = decoded
        for chunk in meta.prefills:
            s, e = chunk.start, chunk.start + chunk.length
            qs = q[s:e].transpose(0, 1).unsqueeze(0)
            if chunk.context_len == 0:
                # The whole prompt so far is in this chunk: attend to the fresh k/v directly.
                ks, vs = k[s:e], v[s:e]
                o = F.scaled_dot_product_attention(
                    qs, ks.transpose(0, 1).unsqueeze(0), vs.transpose(0, 1).unsqueeze(0), is_causal=True, enable_gqa=True
                )
            else:
                total = chunk.context_len + chunk.length
                ks = k_cache.index_select(0, chunk.block_table).view(-1, kv_heads, head_dim)[:total]
                vs = v_cache.index_select(0, chunk.block_table).view(-1, kv_heads, head_dim)[:total]
                o = F.scaled_dot_product_attention(
                    qs,
                    ks.transpose(0, 1).unsqueeze(0),
                    vs.transpose(0, 1).unsqueeze(0),
                    attn_mask=chunk.mask,
                    enable_gqa=True,
                )
            out[s:e] = o.squeeze(0).transpose(0, 1)
        return out

    @staticmethod
    def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """q: [n, H, D], one token per decode. Returns [n, H, D]."""
        assert meta.decode_block_tables is not None and meta.decode_mask is not None
        n, heads, head_dim = q.shape
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and (fused := cpu_ops.ops()) is not None:
            assert meta.decode_context_lens is not None
            return fused.paged_decode_attention(
                q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, head_dim**-0.5
            )
        kv_heads = k_cache.shape[2]
        # index_select, not advanced indexing: about 10x faster for this gather on the CPU.
        flat_tables = meta.decode_block_tables.view(-1)
        keys = k_cache.index_select(0, flat_tables).view(n, -1, kv_heads, head_dim).transpose(1, 2)
        values = v_cache.index_select(0, flat_tables).view(n, -1, kv_heads, head_dim).transpose(1, 2)
        qd = q.view(n, kv_heads, heads // kv_heads, head_dim)
        return F.scaled_dot_product_attention(qd, keys, values, attn_mask=meta.decode_mask).reshape(n, heads, head_dim)


class TritonPagedAttention:
    """kernels/' Triton kernels: one launch writes the step's K/V, one attends for every
    sequence (prefill chunks and decodes alike) straight from the paged cache, no gather."""

    packed = True

    def __init__(self) -> None:
        from triage_router.kernels.kv_cache_write import write_kv_cache
        from triage_router.kernels.paged_attention import paged_attention

        self._attend = paged_attention
        self._write = write_kv_cache

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        assert meta.block_tables is not None and meta.query_start_loc is not None and meta.seq_lens is not None
        self._write(k, v, kv_cache[0], kv_cache[1], meta.slot_mapping)
        out, _ = self._attend(
            q, kv_cache[0], kv_cache[1], meta.block_tables, meta.query_start_loc, meta.seq_lens,
            max_query_len=meta.max_query_len,
        )
        return out


def make_attention_backend(device: torch.device, name: str = "auto") -> AttentionBackend:
    """'auto': Triton kernels on CUDA, torch elsewhere. 'triton' on the CPU needs
    TRITON_INTERPRET=1 (tests only: it is slow)."""
    if name == "triton" or (name == "auto" and device.type == "cuda"):
        return TritonPagedAttention()
    if name in ("torch", "auto"):
        return TorchPagedAttention()
    raise ValueError(f"unknown attention backend {name!r}: expected auto, torch or triton")
