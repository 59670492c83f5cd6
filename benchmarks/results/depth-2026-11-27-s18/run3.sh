#!/usr/bin/env bash
# Session 18, third call (one H100): (1) GPU tests — the Gluon GEMMs bitwise against the Triton kernel (ring pairs
# with STAGES = DEPTH + 1 among them) and the layer tests with cache_N; (2) layer A/B, cache_N (the depth picks of
# calls 1-2 at T <= 128 with >= 0.5% gain: set_cache_pick.py --root cache_N --from-sweep <call1+2 rows, T <= 128>
# --min-gain 0.005) against autotune_cache (A), four workloads at T = 1 / 8 / 32 / 128, runs N A N A.
set -u
D=benchmarks/results/depth-2026-11-27-s18
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
A=$PWD/autotune_cache; N=$PWD/$D/cache_N
TMOE_AUTOTUNE_CACHE=$N PYTHONPATH=. timeout 200 python -m pytest -q -p no:cacheprovider -x \
    tests/test_gluon_gemm.py -k "bitwise_equals_triton or scale_words" tests/test_layer.py 2>&1 | tail -4
OUT="$OUT/ab" WORKLOADS=gptoss,dsv3,qwen3,v4flash TOKENS=1,8,32,128 BENCH_TIMEOUT=90 \
    RUNS="N:TMOE_AUTOTUNE_CACHE=$N A:TMOE_AUTOTUNE_CACHE=$A N:TMOE_AUTOTUNE_CACHE=$N A:TMOE_AUTOTUNE_CACHE=$A" \
    bash benchmarks/run_ab.sh > "$OUT/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$OUT/ab" | tee "$OUT/ab.txt"
rm -f "$OUT"/ab/*.log
