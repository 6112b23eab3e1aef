"""The kernels compile for an H100 (sm_90), checked here without a GPU (see sm90_compile.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

REPO = Path(__file__).resolve().parents[2]
NVIDIA_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


@pytest.mark.skipif(
    not (NVIDIA_BIN / "ptxas").exists() or not (NVIDIA_BIN / "cuobjdump").exists(),
    reason="this triton build ships no ptxas/cuobjdump",
)
def test_every_kernel_compiles_to_sm90_cubin() -> None:
    # A subprocess, because this session's kernels are interpreted (conftest sets TRITON_INTERPRET).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.sm90_compile"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and " variants compiled within limits" in result.stdout, result.stdout
