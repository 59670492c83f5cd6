#!/usr/bin/env bash
# Session 19, call 2 (one H100): the new "arith" decode alone (the parity rings taken out), layer A/B against session
# 18's tree (ab_base = f315ebc: old decode), same autotune cache, runs new base x 3 interleaved, T = 1 / 8 / 32 / 128.
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
OUT="$W/ab" WORKLOADS=${WORKLOADS:-gptoss,dsv3,qwen3,v4flash} TOKENS=${TOKENS:-1,8,32,128} BENCH_TIMEOUT=${BT:-75} \
    RUNS="${RUNS:-new base new base new base}" bash benchmarks/run_ab.sh > "$W/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" | tee "$W/ab.txt"
rm -f "$W"/ab/*.log
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
