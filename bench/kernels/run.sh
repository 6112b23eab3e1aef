#!/usr/bin/env bash
# Every kernel benchmark of docs/benchmarks.md ("Kernels"), in one command, on a CUDA GPU:
#   bash bench/kernels/run.sh [decode_bandwidth.py options]
# First the kernel tests run compiled on CUDA (bf16 included) when pytest is installed, so
# the timings below are of kernels known to be right on this GPU.
# PYTHON picks the interpreter (default: python). Each benchmark refuses (exit 1, with a
# message) when no GPU is present.
set -euo pipefail
PY="${PYTHON:-python}"
cd "$(dirname "$0")/../.."
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'bench/kernels: needs a CUDA GPU; none found')"
if "$PY" -c "import pytest" 2>/dev/null; then
    TRITON_INTERPRET=0 "$PY" -m pytest -q tests/kernels tests/engine_server/test_cuda_path.py
else
    echo "pytest not installed: skipping the compiled kernel tests" >&2
fi
"$PY" bench/kernels/decode_bandwidth.py "$@"
"$PY" bench/kernels/shared_prefix_speedup.py
# End to end: our engine on CUDA against transformers' generate with SDPA.
"$PY" bench/kernels/engine_decode.py
