#!/usr/bin/env bash
# Session 20, call 1 (one H100): half tiles (8 weight rows per warp, configs.GLUON_BLOCK_N).
# 1. in parallel: their GPU bitwise test, and every workload's whole-call candidates (tune_layer_small.py --space half
#    --compile-only: compiles them and checks each candidate's bits against the pick's);
# 2. the same candidates timed as whole calls, 3 interleaved rounds (T = 1 and 8).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
( timeout 330 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "half" > "$W/pytest-half.txt" 2>&1 ) &
for wl in qwen3 gptoss v4flash dsv3; do
  ( timeout 330 python benchmarks/tune_layer_small.py --space half --tokens ${TOKENS:-1,8} --workloads $wl \
      --compile-only > "$W/warm-$wl.txt" 2>&1 ) &
done
wait
echo "warm + tests: $(( $(date +%s) - T0 )) s"; tail -3 "$W/pytest-half.txt"; tail -n 4 "$W"/warm-*.txt
timeout 240 python benchmarks/tune_layer_small.py --space half --tokens ${TOKENS:-1,8} --rounds 3 \
    --json "$W/half.json" 2>&1 | tee "$W/half.txt" | grep -v "^ "
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
