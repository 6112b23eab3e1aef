"""A Llama-family decoder (Llama, SmolLM2, Mistral, Qwen2) over a flattened, paged batch.

Every step runs all scheduled tokens of all sequences as one [T, hidden] tensor: the linear
layers see a single matrix, and only attention needs to know where sequences start and end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triage_router.engine_server import cpu_ops
from triage_router.engine_server.attention import AttentionBackend, AttentionMetadata
from triage_router.engine_server.config import ModelConfig
from triage_router.engine_server.rotary import RotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bf16 on the CPU: cpu_ops' one-pass kernel (torch's CPU rms_norm is ~8 kernels a call).
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and (fused := cpu_ops.ops()) is not None:
            return fused.rms_norm(x, self.weight, self.eps)
        # It accumulates in fp32 for bf16 inputs; in fp32 it is bit-identical to the reference's
        # unfused formula.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class ResidualLinear(nn.Linear):
    """A projection whose output joins the residual stream. Its own type so that a packed CPU
    twin can fuse the add into the GEMM (see cpu_linear)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return residual + super().forward(x)


class GatedUpProj(nn.Linear):
    """gate and up projections stacked in one weight, returning silu(gate) * up. Its own type so
    that a packed CPU twin can fuse the activation and the product into the GEMMs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = super().forward(x).chunk(2, dim=-1)
        return F.silu(gate) * up


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        # q, k and v share one GEMM: one weight read per step instead of three.
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = ResidualLinear(self.q_size, cfg.hidden_size, bias=cfg.o_bias)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: torch.Tensor, meta: AttentionMetadata,
        backend: AttentionBackend, residual: torch.Tensor,
    ) -> torch.Tensor:
        """residual + attention(x)."""
        t = x.shape[0]
        qk, v = self.qkv_proj(x).split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        # q and k rotate together: one set of kernels for both.
        qk = apply_rotary(qk.view(t, self.heads + self.kv_heads, self.head_dim), *rope)
        q, k = qk.split([self.heads, self.kv_heads], dim=1)
        o = backend.forward(q, k, v.view(t, self.kv_heads, self.head_dim), kv_cache, meta)
        return self.o_proj(o.reshape(t, self.q_size), residual)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = GatedUpProj(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = ResidualLinear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + mlp(x)."""
        return self.down_proj(self.gate_up_proj(x), residual)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: torch.Tensor, meta: AttentionMetadata,
        backend: AttentionBackend,
    ) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x), rope, kv_cache, meta, backend, residual=x)
        return self.mlp(self.post_attention_layernorm(x), residual=x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.rotary = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
        meta: AttentionMetadata, backend: AttentionBackend,
    ) -> torch.Tensor:
        """Hidden states [T, hidden] after the final norm."""
        x = self.embed_tokens(input_ids)
        rope = self.rotary.lookup(positions, x.dtype)
        for layer, cache in zip(self.layers, kv_caches):
            x = layer(x, rope, cache, meta, backend)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor, fp32: bool = True) -> torch.Tensor:
        # Logits in fp32 so that sampling and logprobs do not depend on the weight dtype.
        # fp32=False is for argmax-only use: the conversion is exact, so it picks the same token.
        logits = self.lm_head(hidden)
        return logits.float() if fp32 else logits
