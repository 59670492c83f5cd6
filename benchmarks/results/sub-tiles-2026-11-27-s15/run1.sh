#!/usr/bin/env bash
# Session 15, first call (one GPU): token tiles with a narrower second body (GemmConfig.sub_block_m).
#   1. GPU tests of the new body: bitwise vs the Triton kernel around both count boundaries, GEMM2's TMA rows
#   2. sweep_gemm.py --sub: the shipped pick vs sub-body variants (same bits checked), mid / prefill sizes
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 110 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "sub_tiles or validation" \
    tests/test_tma_copy.py 2>&1 | tee "$OUT/tests.log" | tail -6
for spec in dsv3:2048:120 qwen3:2048:90 gptoss:2048:90 dsv3:512:80 dsv3:8192:90; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/sweep_gemm.py --sub --workload "$wl" --tokens "$tok" \
      --json "$OUT/sub-$wl-${tok/,/-}.json" 2>&1 | grep -v Warning | tee "$OUT/sub-$wl-${tok/,/-}.log" \
      | sed -E 's/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' | cut -c1-210
done
