#!/usr/bin/env bash
# Every kernel benchmark of docs/benchmarks.md ("Kernels"), in one command, on a CUDA GPU:
#   bash bench/kernels/run.sh
# PYTHON picks the interpreter (default: python). Each script refuses (exit 1, with a message) when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")"
"${PYTHON:-python}" decode_bandwidth.py "$@"
"${PYTHON:-python}" shared_prefix_speedup.py
