#!/usr/bin/env bash
# Session 17, tenth call (one H100): GPU tests on the final tree — the autotuner (its seeded variants now include the
# other grid order with each K loop), the layer, PDL and the benchmark scripts.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 420 python -m pytest -q -p no:cacheprovider tests/test_autotune.py tests/test_layer.py tests/test_pdl.py \
    tests/test_benchmark_scripts.py 2>&1 | tee "$OUT/tests.log" | tail -4
