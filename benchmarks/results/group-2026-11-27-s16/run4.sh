#!/usr/bin/env bash
# Session 16 (one H100): gpt-oss GEMM1 bucket 2048 N-block-major (sweep -3.0%, run1's group-gptoss-2048.json) — the
# layer vs the cache before it (cache_before_gptoss/), interleaved processes.
set -u
D=benchmarks/results/group-2026-11-27-s16
OUT=${OUT:-/tmp/tmoe-out}
OUT="$OUT/ab" WORKLOADS=gptoss TOKENS=2048 BENCH_TIMEOUT=90 \
    RUNS="new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before_gptoss new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before_gptoss new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before_gptoss" \
    bash benchmarks/run_ab.sh
tar -czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"
