#!/usr/bin/env bash
# Session 17, fifth call (one H100): tune_layer_small.py --space combo (K loop x grid order, timed as whole calls) on
# the decode rows of issue 7's targets: gpt-oss and dsv3 at T = 8 / 32 / 128 (run4: the two choices compound).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in gptoss:8,32,128:230 dsv3:8,32,128:330; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space combo --workloads "$wl" --tokens "$tok" \
      --json "$OUT/combo-$wl.json" 2>&1 | grep -v Warning
done
