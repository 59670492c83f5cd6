#!/usr/bin/env bash
# Session 17, second call (one H100): gpt-oss GEMMs alone (gemm_ab.py) in four trees, twice each, interleaved:
# base = session 16 (the partial step loaded after the loop), new = its codes in an extra ring slot copied with step
# 0's, new2 = copied with the prologue's last group, new3 = base plus the extra slot unused (shared memory only).
# new = experiments/partial_step_ring.patch applied; ab_new2 / ab_new3 were copies of tmoe/ with the change named
# (the token inputs are unseeded: the checksums printed do not compare across trees; the GPU tests of call 1 did).
set -u
export PYTHONUNBUFFERED=1 TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache
D=benchmarks/results/partial-ring-2026-11-27-s17
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu2.txt"
for round in 1 2; do
  for tree in base new new2 new3; do
    path=.; [ $tree != new ] && path="ab_$tree:."
    PYTHONPATH=$path timeout 60 python $D/gemm_ab.py $tree 2>&1 | grep -v Warning | tee -a "$OUT/gemm_ab.txt"
  done
done
