#!/usr/bin/env bash
# Session 15, last call (one GPU): the grid order where run1-4 did not try it — the tail launch of the prefill picks
# (T = 8192: tails of 32 / 64 tokens run tile-major by default).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
for wl in dsv3 v4flash gptoss; do
  timeout 110 python benchmarks/sweep_gemm.py --sub --workload "$wl" --tokens 8192 \
      --json "$OUT/sub6-$wl.json" 2>&1 | grep -v Warning \
      | sed -E 's/ fuse=0 maxnreg=None//; s/ swap=1//; s/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' \
      | cut -c1-150
done
