#!/usr/bin/env bash
# Session 18, eighth call (one H200): the H200 table on the final tree and caches (bench_quant + bench_layer, four
# workloads, T = 1 .. 8192, peers).
set -u
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
SKIP_TESTS=1 LAYER_TIMEOUT=400 bash benchmarks/run_gpu_suite.sh > "$OUT/suite.log" 2>&1
grep "^|\|GB/s" "$OUT/layer.log" | head -40
