"""RoPE with the sign folded into the sin table equals the textbook rotate-half form, bit for bit."""

from __future__ import annotations

import torch

from triage_router.engine_server.rotary import RotaryEmbedding, apply_rotary


def rotate_half_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def test_matches_rotate_half_exactly_on_a_strided_view():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=16, max_positions=64, theta=10000.0, scaling=None)
    positions = torch.tensor([0, 5, 63])
    cos, signed_sin = rope.lookup(positions, torch.float32)
    sin = torch.cat((-signed_sin[..., :8], signed_sin[..., 8:]), dim=-1)  # textbook table: sin on both halves
    fused = torch.randn(3, 7 * 16 + 5)  # q and k heads side by side, then other columns
    qk = fused[:, : 7 * 16].view(3, 7, 16)
    assert torch.equal(apply_rotary(qk, cos, signed_sin), rotate_half_reference(qk, cos, sin))
