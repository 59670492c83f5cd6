#!/usr/bin/env bash
# Session 16, seventh call (one H100): the grid in groups of token tiles (GemmConfig.group_m).
#   1. GPU tests: group_m pairs bitwise vs the Triton kernel (short last group, the overflow launch, graph replay)
#   2. sweep_gemm.py --group: the shipped pick vs N-block-major in groups of 2 / 4 / 8 tiles (same bits checked)
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "sub_tiles or overflow or validation" \
    2>&1 | tee "$OUT/tests.log" | tail -3
for spec in dsv3:2048:75 v4flash:2048:60 gptoss:2048:60 qwen3:2048:45 dsv3:8192:80 gptoss:8192:60; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/sweep_gemm.py --group --workload "$wl" --tokens "$tok" \
      --json "$OUT/group-$wl-$tok.json" 2>&1 | grep -v Warning \
      | sed -E 's/ fuse=0 maxnreg=None//; s/ swap=1//; s/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' \
      | cut -c1-170
done
