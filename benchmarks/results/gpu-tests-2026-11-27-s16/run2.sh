#!/usr/bin/env bash
# Session 16, last call (one H100): the Gluon GEMM file's bitwise matrix (25 shape / routing cases x the Gluon configs
# vs the Triton kernel), the part of the GPU suite the ninth call left out, on the final tree.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TMOE_HYPOTHESIS_PROFILE=ci timeout 560 python -m pytest -q -p no:cacheprovider -k bitwise_equals_triton \
    tests/test_gluon_gemm.py 2>&1 | tee "$OUT/pytest-bitwise.log" | tail -4
