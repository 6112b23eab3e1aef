"""Split-KV decode (flash-decoding): long contexts at small batch.

A decode step has one query token per sequence, so the paged kernel launches only
``num_seqs * num_kv_heads`` programs; at batch 1-8 that leaves most of a GPU's SMs idle while
each program walks thousands of keys. Here every sequence's KV range is cut into
``num_splits`` shares, each share becomes its own program writing a partial state (fp32), and
``merge_states`` reduces the partials by their log-sum-exp.
"""

from __future__ import annotations

import math

import torch
import triton

from triage_router.kernels.merge_states import merge_states
from triage_router.kernels.paged_attention import paged_attention, paged_attention_partials

# A split shorter than this costs more in partial writes and merging than it saves.
MIN_KEYS_PER_SPLIT = 256
MAX_SPLITS = 32


def num_kv_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int) -> int:
    """Splits per sequence so that the launch fills about two waves of ``num_sms`` programs."""
    programs = max(1, num_seqs * num_kv_heads)
    wanted = triton.cdiv(2 * num_sms, programs)
    longest_useful = max(1, max_seq_len // MIN_KEYS_PER_SPLIT)
    return max(1, min(wanted, longest_useful, MAX_SPLITS))


def streaming_multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter runs programs one after another anyway


def split_kv_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    *,
    num_splits: int | None = None,
    max_seq_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention, one query token per sequence: ``q`` ``[num_seqs, num_q_heads, head_dim]``.

    Returns ``(out, lse)`` as ``paged_attention`` does. ``num_splits`` defaults to
    ``num_kv_splits(...)``; pass ``max_seq_len`` to spare a device sync when choosing it.
    """
    num_seqs = q.shape[0]
    if seq_lens.shape[0] != num_seqs:
        raise ValueError(f"decode has one query per sequence: q has {num_seqs} rows, seq_lens {seq_lens.shape[0]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if num_splits is None:
        if max_seq_len is None:
            max_seq_len = int(seq_lens.max()) if num_seqs else 0
        num_splits = num_kv_splits(num_seqs, k_cache.shape[2], max_seq_len, streaming_multiprocessors(q.device))
    query_start_loc = torch.arange(num_seqs + 1, dtype=torch.int32, device=q.device)
    if num_splits == 1:  # nothing to merge: skip the fp32 round trip
        return paged_attention(
            q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale, max_query_len=1
        )
    partials = torch.empty((num_splits, *q.shape), dtype=torch.float32, device=q.device)
    partial_lse = torch.empty((num_splits, *q.shape[:2]), dtype=torch.float32, device=q.device)
    paged_attention_partials(
        q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
        partials, partial_lse, max_query_len=1,
    )  # fmt: skip
    return merge_states(partials, partial_lse, out_dtype=q.dtype)
