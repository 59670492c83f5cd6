#!/usr/bin/env bash
# Session 17, fourth call (one H100): dsv3 T = 128, GEMM1 bucket 128 — the cache's pick (A: register loop, grid
# tile-major) vs run3's two leads and their sum: B ring 4 (prefetch=4), C ring 4 + N-block-major, D N-block-major;
# layer runs interleaved in separate processes (run_ab.sh, each run with its own TMOE_AUTOTUNE_CACHE).
# The caches (deleted after the call; rebuild from the cache at commit 4d7a1a1 = A):
#   cp -r autotune_cache $D/cache_B && python benchmarks/set_cache_pick.py --device "NVIDIA H100 80GB HBM3" \
#       --root $D/cache_B --workload dsv3 --gemm gemm1 --tokens 128 --set prefetch=4 --us 2133.1 --old-us 2171.8
#   cache_C: the same with --set prefetch=4 --set n_fastest=True; cache_D: --set n_fastest=True
set -u
D=benchmarks/results/t128-layer-2026-11-27-s17
OUT=${OUT:-/tmp/tmoe-out}
A=$PWD/autotune_cache
OUT="$OUT/ab" WORKLOADS=dsv3 TOKENS=128 BENCH_TIMEOUT=90 \
    RUNS="A:TMOE_AUTOTUNE_CACHE=$A B:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_B C:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_C D:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_D A:TMOE_AUTOTUNE_CACHE=$A B:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_B C:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_C D:TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_D" \
    bash benchmarks/run_ab.sh
for f in "$OUT"/ab/layer-*.json; do
  python -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print(sys.argv[1].rsplit('/',1)[1], r['us'], r['gemm1_config'], r['efficiency'])" "$f"
done | tee "$OUT/ab-summary.txt"
rm -f "$OUT"/ab/*.log
