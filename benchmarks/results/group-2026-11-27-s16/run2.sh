#!/usr/bin/env bash
# Session 16, eighth call (one H100): the layer with the group_m pick (dsv3 GEMM2, bucket 2048) vs the cache before
# it (cache_before/), interleaved runs in separate processes.
set -u
D=benchmarks/results/group-2026-11-27-s16
OUT=${OUT:-/tmp/tmoe-out}
OUT="$OUT/ab" WORKLOADS=dsv3 TOKENS=2048 BENCH_TIMEOUT=90 \
    RUNS="new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_before" \
    bash benchmarks/run_ab.sh
tar -czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"
