from __future__ import annotations

import pytest

from triage_router.policies.cost_model import CostModel

# The paper's A100_4B coefficients.
A100_4B = CostModel(
    dc1=5.91298857e-09, dc2=1.195828e-02, pc1=1.46584975e-09, pc2=1.0515576e-04,
    swap_s_per_token=0.0001,
)


@pytest.fixture
def cost() -> CostModel:
    return A100_4B
