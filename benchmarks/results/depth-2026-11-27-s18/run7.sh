#!/usr/bin/env bash
# Session 18, seventh call (one H100): the table on the final tree (bench_quant + bench_layer, four workloads,
# T = 1 .. 8192, peers), then the GPU tests of the layer, PDL chain, autotuner and benchmark scripts.
set -u
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
SKIP_TESTS=1 LAYER_TIMEOUT=360 bash benchmarks/run_gpu_suite.sh > "$OUT/suite.log" 2>&1
grep "^|\|GB/s" "$OUT/layer.log" | head -40
PYTHONPATH=. timeout 170 python -m pytest -q -p no:cacheprovider tests/test_layer.py tests/test_pdl.py \
    tests/test_autotune.py tests/test_benchmark_scripts.py 2>&1 | tail -3
