#!/usr/bin/env bash
# Session 17, sixth call (one H100): (1) layer A/B of run5's combo picks (cache_E: dsv3 T = 32 GEMM1 + GEMM2, gpt-oss
# T = 8 GEMM1, T = 128 GEMM1) against the cache with run4's dsv3 T = 128 pick (A), dsv3 / gpt-oss T = 8 / 32 / 128,
# interleaved E A E A (rows whose buckets did not change are the controls); (2) bench_layer's decode and mid rows
# (T = 1 .. 512, four workloads) with cache_E.
# cache_E (deleted after the call): A + `set_cache_pick.py --root $D/cache_E --from-sweep call5/combo-gptoss.json
# call5/combo-dsv3.json --min-gain 0.005`; A = the cache with run4's pick C (dsv3 GEMM1 bucket 128). cache_E became
# autotune_cache afterwards.
set -u
D=benchmarks/results/t128-layer-2026-11-27-s17
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
A=$PWD/autotune_cache; E=$PWD/$D/cache_E
OUT="$OUT/ab" WORKLOADS=dsv3,gptoss TOKENS=8,32,128 BENCH_TIMEOUT=80 \
    RUNS="E:TMOE_AUTOTUNE_CACHE=$E A:TMOE_AUTOTUNE_CACHE=$A E:TMOE_AUTOTUNE_CACHE=$E A:TMOE_AUTOTUNE_CACHE=$A" \
    bash benchmarks/run_ab.sh > "$OUT/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$OUT/ab" | tee "$OUT/ab.txt"
rm -f "$OUT"/ab/*.log
TMOE_AUTOTUNE_CACHE=$E PYTHONPATH=. timeout 240 python benchmarks/bench_layer.py --no-peers \
    --workloads dsv3,v4flash,gptoss,qwen3 --tokens 1,8,32,128,512 --json "$OUT/decode-E.json" 2>&1 | grep "^|"
