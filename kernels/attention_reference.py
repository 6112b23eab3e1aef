"""Paged attention in plain PyTorch, one sequence at a time: the reference every Triton kernel
in this package is tested against (same inputs, same outputs, plus the log-sum-exp)."""

from __future__ import annotations

import math

import torch


def gather_kv(cache: torch.Tensor, block_table_row: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` tokens of one sequence from a paged cache: ``[length, kv_heads, head_dim]``."""
    block_size = cache.shape[1]
    blocks = block_table_row[: -(-length // block_size)].long()
    return cache[blocks].reshape(-1, cache.shape[2], cache.shape[3])[:length]


def paged_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    *,
    kv_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of ``paged_attention``, in fp32, one sequence at a time."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    group = q.shape[1] // k_cache.shape[2]
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=torch.float32, device=q.device)
    starts = query_start_loc.tolist()
    for s, seq_len in enumerate(seq_lens.tolist()):
        q_s = q[starts[s] : starts[s + 1]].float()
        q_len = q_s.shape[0]
        if q_len == 0:
            continue
        k = gather_kv(k_cache, block_tables[s], seq_len).float().repeat_interleave(group, dim=1)
        v = gather_kv(v_cache, block_tables[s], seq_len).float().repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q_s, k) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
        kv_pos = torch.arange(seq_len, device=q.device)
        visible = kv_pos[None, :] <= q_pos[:, None]
        if kv_starts is not None:
            visible &= kv_pos[None, :] >= int(kv_starts[s])
        scores = scores.masked_fill(~visible, float("-inf"))
        row_lse = torch.logsumexp(scores, dim=-1)  # [heads, q_len]
        probs = torch.exp(scores - row_lse[..., None]).nan_to_num(0.0)  # rows with no key: 0
        out[starts[s] : starts[s + 1]] = torch.einsum("hqk,khd->qhd", probs, v)
        lse[starts[s] : starts[s + 1]] = row_lse.transpose(0, 1)
    return out.to(q.dtype), lse
