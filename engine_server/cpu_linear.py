"""bf16 linear layers on the CPU through oneDNN weights reordered once at load time.

`F.linear` on a bf16 CPU tensor hands the plain [out, in] weight to oneDNN, which reorders it
into its blocked (AMX) layout on every call. At decode batch sizes the GEMMs are bound by
reading the weights, so that extra pass costs about a third of the GEMM time: packing once
took SmolLM2-135M's GEMMs from ~27 to ~20 ms per decode step at batch 32.

oneDNN post-ops also absorb the elementwise work around the GEMMs, each a separate ~5-25 us
kernel launch at decode sizes: the residual add after o_proj and down_proj, and silu(gate) * up.
"""

from __future__ import annotations

import torch
from torch import nn

from triage_router.engine_server.model import GatedUpProj, ResidualLinear

_linear = torch.ops.mkldnn._linear_pointwise


def packing_applies(device: torch.device, dtype: torch.dtype) -> bool:
    """Only bf16 on the CPU: fp32 keeps torch's own GEMM, bit-identical to the reference.

    oneDNN's bf16 GEMMs need AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; on a CPU with neither (an
    AVX2-only EPYC, say) packing would fail at load time, so such CPUs keep torch's own linears."""
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class PackedLinear(nn.Module):
    """Drop-in replacement for a bf16 `nn.Linear`. The weight is an opaque oneDNN tensor, not a
    parameter: the model is frozen once packed (no `.to()`, no state_dict round trip)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = pack_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.weight, self.bias, "none", [], "")


class PackedResidualLinear(PackedLinear):
    """`ResidualLinear`: residual + x @ W.T, the add done by the GEMM's epilogue."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _linear.binary(x, residual, self.weight, self.bias, "add")


class PackedGatedUp(nn.Module):
    """`GatedUpProj` as two GEMMs: gate with a swish epilogue, then up with a multiply-by-gate
    epilogue. One more GEMM call, but no split, silu or mul kernels."""

    def __init__(self, linear: GatedUpProj) -> None:
        super().__init__()
        w, b = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
        half = linear.out_features // 2
        self.gate, self.up = pack_weight(w[:half]), pack_weight(w[half:])
        self.gate_bias, self.up_bias = (None, None) if b is None else (b[:half].contiguous(), b[half:].contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = _linear(x, self.gate, self.gate_bias, "swish", [], "")
        return _linear.binary(x, gate, self.up, self.up_bias, "mul")


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    # The batch-size hint barely matters (measured 1 to 512 tokens): one layout serves decode and prefill.
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)


def pack_linears(model: nn.Module) -> None:
    """Replace every `nn.Linear` under `model` in place by its packed twin. A tied lm_head gets
    its own packed copy; the embedding keeps the plain weight for its lookups."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GatedUpProj):
                setattr(parent, name, PackedGatedUp(child))
            elif isinstance(child, ResidualLinear):
                setattr(parent, name, PackedResidualLinear(child))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear(child))
