"""Run every kernel test on the CPU through Triton's interpreter.

``triton.jit`` decides at decoration time whether a kernel is interpreted, so the variable is
set before any kernel module is imported here. If another test package imported ``kernels``
earlier in the session (without the interpreter), those modules are dropped so that the
imports below re-create them interpreted; the other package keeps the objects it holds.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

for _name in [n for n in sys.modules if n == "kernels" or n.startswith("kernels.")]:
    del sys.modules[_name]
