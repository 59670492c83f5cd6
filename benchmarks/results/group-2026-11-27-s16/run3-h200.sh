#!/usr/bin/env bash
# Session 16, tenth call (one H200): sweep_gemm.py --group for the H200 picks at T = 2048 (as run1.sh on the H100).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in dsv3:2048:75 v4flash:2048:60 gptoss:2048:60 qwen3:2048:45; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/sweep_gemm.py --group --workload "$wl" --tokens "$tok" \
      --json "$OUT/h200-group-$wl-$tok.json" 2>&1 | grep -v Warning \
      | sed -E 's/ fuse=0 maxnreg=None//; s/ swap=1//; s/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' \
      | cut -c1-170
done
