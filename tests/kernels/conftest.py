"""Run every kernel test on the CPU through Triton's interpreter, unless told to use a GPU.

``triton.jit`` decides at decoration time whether a kernel is interpreted, so the variable is
set before any kernel module is imported here. If another test package imported ``kernels``
earlier in the session (without the interpreter), those modules are dropped so that the
imports below re-create them interpreted; the other package keeps the objects it holds.

On a machine with a GPU, ``TRITON_INTERPRET=0 python -m pytest tests/kernels`` runs the same
tests compiled for CUDA, on CUDA tensors, with bf16 added (see ``paged_batches.DEVICE``).
"""

from __future__ import annotations

import os
import sys

import torch

if os.environ.get("TRITON_INTERPRET") == "0":
    if not torch.cuda.is_available():
        raise RuntimeError("TRITON_INTERPRET=0 runs the kernel tests on CUDA, and there is no CUDA device")
else:
    os.environ["TRITON_INTERPRET"] = "1"

for _name in [n for n in sys.modules if n == "kernels" or n.startswith("kernels.")]:
    del sys.modules[_name]
