#!/usr/bin/env bash
# Session 16, fourth call (one GPU): the code ring's L2 prefetch (TMOE_L2_PREFETCH, wgmma_gemm._l2_prefetch), small T.
#   1. the PDL chain test with mode 1 (GEMM2 / GEMM1 programs launched early prefetch before their wait): same bits
#   2. run_ab.sh: bench_layer per mode, interleaved, separate processes (the mode is read at import)
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
TMOE_L2_PREFETCH=1,16 timeout 120 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k pdl_chain 2>&1 \
    | tail -2
OUT="$OUT/ab" WORKLOADS=dsv3,gptoss,v4flash,qwen3 TOKENS=1,8,32 BENCH_TIMEOUT=80 \
    RUNS="off:TMOE_L2_PREFETCH=0 m1s8:TMOE_L2_PREFETCH=1,8 m1s16:TMOE_L2_PREFETCH=1,16 m2s16:TMOE_L2_PREFETCH=2,16 m3s8:TMOE_L2_PREFETCH=3,8 off:TMOE_L2_PREFETCH=0" \
    bash benchmarks/run_ab.sh
tar -czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"
