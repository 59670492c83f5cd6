#!/usr/bin/env bash
# Session 17, eighth call (one H100): (1) layer A/B of run7's combo picks (qwen3 T = 32 GEMM2, T = 128 GEMM1 + GEMM2;
# v4flash T = 32 GEMM1 + GEMM2; this checkout's cache) against the cache before them (cache_before7: the cache after
# run6's picks), interleaved new / before x 2, qwen3 and v4flash T = 32 / 128; (2) the full H100 table with this
# session's picks (SKIP_TESTS=1 run_gpu_suite.sh: quantizer + layer, T = 1 .. 8192, four workloads).
# cache_before7 (deleted after the call) = the cache after run6 (cache_E); this checkout's cache = it + `set_cache_pick.py
# --from-sweep` of call7's T = 32 / 128 rows (qwen3, v4flash) with --min-gain 0.005.
set -u
D=benchmarks/results/t128-layer-2026-11-27-s17
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
N=$PWD/autotune_cache; B=$PWD/$D/cache_before7
OUT="$OUT/ab" WORKLOADS=qwen3,v4flash TOKENS=32,128 BENCH_TIMEOUT=60 \
    RUNS="new:TMOE_AUTOTUNE_CACHE=$N before:TMOE_AUTOTUNE_CACHE=$B new:TMOE_AUTOTUNE_CACHE=$N before:TMOE_AUTOTUNE_CACHE=$B" \
    bash benchmarks/run_ab.sh > "$OUT/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$OUT/ab" | tee "$OUT/ab.txt"
rm -f "$OUT"/ab/*.log
SKIP_TESTS=1 LAYER_TIMEOUT=330 bash benchmarks/run_gpu_suite.sh > "$OUT/suite.txt" 2>&1
grep "^|" "$OUT/layer.log" | head -40
