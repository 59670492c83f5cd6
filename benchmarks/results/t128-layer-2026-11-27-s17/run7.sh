#!/usr/bin/env bash
# Session 17, seventh call (one H100): tune_layer_small.py --space combo (K loop x grid order, whole calls) at T = 1 for
# the four workloads and at T = 32 / 128 for qwen3 and v4flash (buckets picked before the code ring or the grid
# order existed), on the cache with run6's picks.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in qwen3:1,32,128:150 v4flash:1,32,128:180 gptoss:1:80 dsv3:1:90; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space combo --workloads "$wl" --tokens "$tok" \
      --json "$OUT/combo-$wl.json" 2>&1 | grep -v Warning
done
