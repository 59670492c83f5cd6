#!/usr/bin/env bash
# Session 16, eleventh call (one H100): small-T picks by the whole call's time over tile variants
# (tune_layer_small.py --space tiles: channel blocks per program, block_n, grid order), T = 8 and 32, the four
# workloads — gpt-oss T = 8 GEMM2 ran 1.82 waves (ncu, NOTES "v20").
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for wl in gptoss dsv3 v4flash qwen3; do
  timeout 130 python benchmarks/tune_layer_small.py --space tiles --workloads "$wl" --tokens 8,32 \
      --json "$OUT/tiles-$wl.json" 2>&1 | grep -v Warning
done
