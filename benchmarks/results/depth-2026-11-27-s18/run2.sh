#!/usr/bin/env bash
# Session 18, second call (one H100): tune_layer_small.py --space depth — the code ring 3-6 deep with STAGES = DEPTH + 1
# (the activation wait completes the codes' cp.async group too, so a ring deeper than STAGES - 1 hid only
# STAGES - 1 steps), whole calls, on the other decode rows and the 4-warp ring picks at T = 512.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in qwen3:8,32,128:120 v4flash:8,32,128,512:200 dsv3:32,128,512:200 gptoss:512:60; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space depth --workloads "$wl" --tokens "$tok" \
      --json "$OUT/depth-$wl.json" 2>&1 | grep -v Warning | tee -a "$OUT/log.txt"
done
