#!/usr/bin/env bash
# Session 18, fifth call (one H200: the machine the fourth call got): tune_layer_small.py --space depth — the code ring 3-6 deep with STAGES = DEPTH + 1
# (the activation wait completes the codes' cp.async group too, so a ring deeper than STAGES - 1 hid only
# STAGES - 1 steps), whole calls, on the H200 decode rows (its own cache picks).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in gptoss:1,8,32,128:150 dsv3:1,8,32,128:170 qwen3:1,8,32,128:110 v4flash:1,8,32,128:140; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space depth --workloads "$wl" --tokens "$tok" \
      --json "$OUT/depth-$wl.json" 2>&1 | grep -v Warning | tee -a "$OUT/log.txt"
done
