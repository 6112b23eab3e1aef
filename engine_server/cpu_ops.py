"""Fused C++ CPU kernels for the bf16 decode step (csrc/cpu_ops.cpp), built on first use.

Two ops, each replacing several torch kernels per call on the CPU:
- `paged_decode_attention`: reads K/V in place through the block tables instead of gathering
  them into a padded copy and running SDPA over it (two passes over the context, one copy).
- `rms_norm`: one pass per row; torch's CPU rms_norm is a composite of ~8 kernels.

The extension compiles once per machine (-march=native) into torch's extensions cache. Any
failure (no compiler, no ninja, a build error) logs one warning and `ops()` returns None:
callers keep their torch path, so nothing but speed depends on the build.
Set TRIAGE_CPU_OPS=0 to skip it (A/B timings, debugging).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "csrc" / "cpu_ops.cpp"


@functools.cache
def ops() -> ModuleType | None:
    """The compiled extension, or None when disabled or unavailable (warned once)."""
    if os.environ.get("TRIAGE_CPU_OPS", "1") == "0":
        return None
    try:
        return _build()
    except Exception as exc:  # noqa: BLE001 - any build/import failure means "use torch"
        lines = str(exc).strip().splitlines()
        log.warning("C++ CPU ops unavailable, using the torch path: %s: %s", type(exc).__name__, lines[-1] if lines else "")
        return None


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        # pip's ninja puts its binary next to the interpreter, which may not be on PATH when the
        # venv is not activated; torch's builder looks ninja up on PATH.
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    t = time.perf_counter()
    # A cached build loads in about a second; a first build takes ~30 s: say so while it runs.
    notice = threading.Timer(2.0, log.warning, ("compiling the C++ CPU ops for this CPU (once per machine, ~30 s)",))
    notice.daemon = True
    notice.start()
    try:
        module = cpp_extension.load(
            # -march=native code must never be loaded on another CPU from a shared cache directory.
            name=f"triage_cpu_ops_{_cpu_key()}",
            sources=[str(_SOURCE)],
            # -fopenmp: at::parallel_for is header-inlined OpenMP; the extension then shares the
            # libgomp torch already loaded (same soname), not a second thread pool.
            # -fno-math-errno: sqrt/exp need no errno path. (GCC's default 256-bit vectors measured
            # faster here than -mprefer-vector-width=512: 64-wide rows, short loops.)
            extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    finally:
        notice.cancel()
    elapsed = time.perf_counter() - t
    if elapsed > 2.0:
        log.warning("built the C++ CPU ops in %.0f s (cached for later runs)", elapsed)
    return module


def _cpu_key() -> str:
    """A short hash of the CPU model and its instruction-set flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2]
    except OSError:
        import platform

        lines = [platform.machine(), platform.processor()]
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=4).hexdigest()
