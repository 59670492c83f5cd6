#!/usr/bin/env bash
# Session 17, ninth call (one H100): tune_layer_small.py --space combo at mid T for the 4-warp picks: T = 512 (dsv3,
# v4flash, gpt-oss) and T = 2048 (qwen3, v4flash GEMM2); the cache after run8.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in dsv3:512:110 v4flash:512,2048:130 gptoss:512:80 qwen3:2048:80; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space combo --workloads "$wl" --tokens "$tok" \
      --json "$OUT/combo-$wl.json" 2>&1 | grep -v Warning | sed -E 's/ maxnreg=None//'
done
