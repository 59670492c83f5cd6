#!/usr/bin/env bash
# Session 18, call 13 (one H100): mid T — tune_layer_small.py --space mid4 (4-warp ring tiles next to the 8-warp
# picks: qwen3 T = 512, gpt-oss / v4flash / qwen3 T = 2048 GEMM1) and --space depth where the pick is a 4-warp tile
# (qwen3 T = 2048), whole calls, 3 rounds.
set -u
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
for spec in mid4:qwen3:512:90 mid4:gptoss:2048:120 mid4:v4flash:2048:150 depth:qwen3:2048:90; do
  IFS=: read -r space wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space "$space" --workloads "$wl" --tokens "$tok" \
      --json "$OUT/$space-$wl-$tok.json" 2>&1 | grep -v Warning | tee -a "$OUT/log.txt" > /dev/null
done
sed -e 's/ nb=1//' -e 's/maxnreg=None //' -e 's/ ovl=0//' "$OUT/log.txt"
