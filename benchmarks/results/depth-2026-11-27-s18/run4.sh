#!/usr/bin/env bash
# Session 18, fourth call (one H100): the Gluon GEMMs bitwise against the Triton kernel over every config pair of
# tests/test_gluon_gemm.py (ring pairs with STAGES = DEPTH + 1 among them), then the PDL chain / scale words / sub
# tiles / overflow tests of the same file.
set -u
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=. timeout 570 python -m pytest -q -p no:cacheprovider --durations=5 tests/test_gluon_gemm.py 2>&1 \
    | tee "$OUT/pytest.log" | tail -12
