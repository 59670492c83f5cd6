#!/usr/bin/env bash
# Session 18, sixth call (the H200 of calls 4-5): layer A/B, cache_N (the H200 depth picks of call 5 with >= 1%
# gain: set_cache_pick.py --device "NVIDIA H200" --root cache_N --from-sweep call5/depth-*.json --min-gain 0.01)
# against autotune_cache (A), four workloads at T = 1 / 8 / 32 / 128, runs N A N A. No tests: call 4 ran them.
set -u
D=benchmarks/results/depth-2026-11-27-s18
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
A=$PWD/autotune_cache; N=$PWD/$D/cache_N
OUT="$OUT/ab" WORKLOADS=gptoss,dsv3,qwen3,v4flash TOKENS=1,8,32,128 BENCH_TIMEOUT=90 \
    RUNS="N:TMOE_AUTOTUNE_CACHE=$N A:TMOE_AUTOTUNE_CACHE=$A N:TMOE_AUTOTUNE_CACHE=$N A:TMOE_AUTOTUNE_CACHE=$A" \
    bash benchmarks/run_ab.sh > "$OUT/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$OUT/ab" | tee "$OUT/ab.txt"
rm -f "$OUT"/ab/*.log
