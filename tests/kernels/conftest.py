"""Run every kernel test on the CPU through Triton's interpreter.

``triton.jit`` decides at decoration time whether a kernel is interpreted, so the variable is set
before any kernel module is imported, and kernel modules that another test package imported
earlier in the session are reloaded under it.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

for _name in sorted((n for n in sys.modules if n == "kernels" or n.startswith("kernels.")), reverse=True):
    # Submodules first ("kernels.x" sorts after "kernels"), then the package re-exports them.
    importlib.reload(sys.modules[_name])
