#!/usr/bin/env bash
# Session 21, call 1 (one H100): chained code rings (GemmConfig.chain).
# 1. in parallel: their GPU bitwise test, and every workload's whole-call candidates (tune_layer_small.py --space chain
#    --compile-only: compiles them and checks each candidate's bits against the pick's);
# 2. the same candidates timed as whole calls, 3 interleaved rounds (T = 8 and 32; gpt-oss also 128).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
( timeout 300 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "chain" > "$W/pytest-chain.txt" 2>&1 ) &
for wl in qwen3 gptoss v4flash dsv3; do
  ( timeout 300 python benchmarks/tune_layer_small.py --space chain --tokens 8,32 --workloads $wl \
      --compile-only > "$W/warm-$wl.txt" 2>&1 ) &
done
wait
echo "warm + tests: $(( $(date +%s) - T0 )) s"; tail -3 "$W/pytest-chain.txt"; tail -n 4 "$W"/warm-*.txt
timeout 150 python benchmarks/tune_layer_small.py --space chain --tokens 8,32 --workloads gptoss,dsv3 --rounds 3 \
    --json "$W/chain-a.json" 2>&1 | tee "$W/chain-a.txt" | grep -v "^ "
timeout 120 python benchmarks/tune_layer_small.py --space chain --tokens 8,32 --workloads qwen3,v4flash --rounds 3 \
    --json "$W/chain-b.json" 2>&1 | tee "$W/chain-b.txt" | grep -v "^ "
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
