#!/usr/bin/env bash
# Session 19, call 3 (one H100): why the rings by step parity lose (benchmarks/experiments/parity_ring.patch): Nsight
# Compute on dsv3 T = 8's GEMMs (GEMM1 pick: bm8 bn32 p4 s4, the parity loop with the patch) — this tree (the ring
# loop, three barriers per step) vs the tree with the patch (one barrier per step, a loop holding one copy of the step
# per parity). Hypothesis: the loop twice as long misses the instruction cache (stall no_instruction).
set -u
export TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache   # the patched copy has no cache of its own
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
rm -rf /tmp/par && mkdir -p /tmp/par && cp -r tmoe benchmarks tests /tmp/par/ && (cd /tmp/par && git apply benchmarks/experiments/parity_ring.patch) \
    || { echo "patch failed"; exit 1; }
for tree in ring parity; do
  path=.; [ $tree = parity ] && path=/tmp/par:.
  OUT=$OUT/$tree PYTHONPATH=$path KERNEL_FILTER=regex:wgmma CASES="dsv3:8 gptoss:8" NCU_TIMEOUT=150 bash benchmarks/run_ncu.sh \
      > /dev/null 2>&1
  echo "== $tree"; grep -v "^$" "$OUT/$tree/ncu-summary.txt" | head -60
done
