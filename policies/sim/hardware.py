"""The paper's hardware settings: cost coefficients and the KV budget they leave."""

from __future__ import annotations

from dataclasses import dataclass

from triage_router.policies.cost_model import CostModel

GIB = 1 << 30
KIB = 1 << 10


@dataclass(frozen=True, slots=True)
class HardwareSetting:
    name: str
    cost: CostModel
    gpu_gb: float
    params_billions: float
    kv_bytes_per_token: int

    def kv_capacity_tokens(
        self, utilization: float = 0.8, activation_fraction: float = 0.05
    ) -> int:
        """GPU_GB·0.8, minus 5% of that for activations, minus 4 GB per billion parameters
        (fp32 weights, as the paper counts them), divided by the KV bytes per token."""
        usable = self.gpu_gb * utilization
        kv_gb = usable - usable * activation_fraction - self.params_billions * 4
        if kv_gb <= 0:
            raise ValueError(f"{self.name}: the model does not fit in {self.gpu_gb} GB")
        return int(kv_gb * GIB // self.kv_bytes_per_token)

    def kv_blocks(self, block_tokens: int = 32) -> int:
        return self.kv_capacity_tokens() // block_tokens


def _setting(name: str, dc1: float, dc2: float, pc1: float, pc2: float, swap: float,
             gpu_gb: float) -> HardwareSetting:
    params = 4 if name.endswith("4B") else 7
    kv_bytes = 400 * KIB if params == 4 else 512 * KIB
    return HardwareSetting(name, CostModel(dc1, dc2, pc1, pc2, swap), gpu_gb, params, kv_bytes)


SETTINGS: dict[str, HardwareSetting] = {
    s.name: s
    for s in (
        _setting("A100_4B", 5.91298857e-09, 1.195828e-02, 1.46584975e-09, 1.0515576e-04, 0.0001, 40),
        _setting("A100_7B", 1.34911080e-08, 1.330198e-02, 5.13462572e-07, 1.48057167e-04, 0.0001, 40),
        _setting("A5000_4B", 2.86938135e-06, 3.00834536e-02, 1.58625005e-09, 1.30542054e-04, 0.0003, 24),
    )
}
