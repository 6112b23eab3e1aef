"""Launch configurations: one fixed config under the Triton interpreter, autotuned on a GPU.

The interpreter (``TRITON_INTERPRET=1``, how CI runs these kernels on the CPU) fails when the
autotuner has two or more configs to benchmark, so there it gets exactly one. Whether we
interpret is decided when a kernel module is imported, the same moment ``triton.jit`` decides it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import triton


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tuned(
    gpu_configs: Sequence[tuple[int, int]],
    key: Sequence[str],
    interpreter_config: tuple[int, int] = (4, 1),
) -> Callable[[Any], Any]:
    """Autotune over (num_warps, num_stages) pairs on a GPU; use one fixed pair when interpreting.

    Tile sizes are not tuned here: they change the launch grid, so the Python wrappers choose
    them from the shapes (``row_tiles``, ``kv_tile``, ``prefix_row_tiles``), the same way under
    the interpreter as on a GPU.
    """
    pairs = [interpreter_config] if interpreting() else list(gpu_configs)
    configs = [triton.Config({}, num_warps=w, num_stages=s) for w, s in pairs]
    return triton.autotune(configs=configs, key=list(key))
