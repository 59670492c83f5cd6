#!/usr/bin/env bash
# Session 16, second call (one GPU): the warp-specialized decode experiment, two decode partitions (VARIANTS) (benchmarks/experiments/ws_gemm.py --gpu):
# each GEMM bitwise vs the shipped pick (same routing, same inputs) and timed beside it, CUDA graph, per workload / T.
# Each invocation under its own timeout: a deadlocked mbarrier handshake must not take the whole call.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in dsv3:512:150 dsv3:2048:130 dsv3:8192:110 v4flash:2048:70 qwen3:2048:70; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout -k 5 "$limit" python benchmarks/experiments/ws_gemm.py --gpu --workload "$wl" --tokens "$tok" 2>&1 \
      | grep -v Warning | tee "$OUT/ws-$wl-$tok.log"
  echo "[$wl T=$tok exit ${PIPESTATUS[0]}]"
done
