#!/usr/bin/env bash
# Session 21, call 5 (one H100): early GEMM2 after the fix of GEMM1's row count (a tile's rows, not the expert's rest).
# 1. its GPU test and the simulated-EP tests with it on; 2. layer A/B TMOE_EARLY_GEMM2=1 / 0 interleaved, T = 1-128.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
( timeout 200 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "early" > "$W/pytest-gemm.txt" 2>&1 ) &
( TMOE_EARLY_GEMM2=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_ep_symm_mem.py tests/test_layer.py \
    > "$W/pytest-ep-layer.txt" 2>&1 ) &
wait
echo "tests: $(( $(date +%s) - T0 )) s"; for f in "$W"/pytest-*.txt; do echo "$f: $(tail -n 1 $f)"; done
OUT=$W/ab WORKLOADS=gptoss,dsv3,qwen3,v4flash TOKENS=1,8,32,128 BENCH_TIMEOUT=100 \
  RUNS="early:TMOE_EARLY_GEMM2=1 off:TMOE_EARLY_GEMM2=0 early:TMOE_EARLY_GEMM2=1 off:TMOE_EARLY_GEMM2=0" \
  bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -20
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
