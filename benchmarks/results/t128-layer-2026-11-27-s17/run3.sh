#!/usr/bin/env bash
# Session 17, third call (one H100): the decode rows just under the 0.90 line (gpt-oss T = 32 / 128, dsv3 T = 128)
# re-picked by the whole call's time (tune_layer_small.py; session 13 ran the K-loop space at T = 1 / 8, session 16
# the tile space at T = 8 / 32): K loops at gpt-oss T = 32 / 128 and dsv3 T = 128, tiles at T = 128.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in kloop:gptoss:32,128:150 tiles:gptoss:128:110 kloop:dsv3:128:140 tiles:dsv3:128:140; do
  IFS=: read -r space wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space "$space" --workloads "$wl" --tokens "$tok" \
      --json "$OUT/$space-$wl.json" 2>&1 | grep -v Warning
done
