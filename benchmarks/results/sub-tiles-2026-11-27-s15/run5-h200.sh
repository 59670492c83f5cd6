#!/usr/bin/env bash
# Session 15, H200 call (nvidia-h200): run3.sh on an H200 — the sub bodies and the grid order for the H200 picks.
#   1. GPU tests: sub bodies and n_fastest bitwise vs the Triton kernel
#   2. sweep_gemm.py --sub at T = 512 / 2048 (the H200 cache picks of session 14 as the base)
#   3. set_cache_pick.py takes the winners (>= 3%) into this checkout's autotune_cache (redone locally from the JSONs)
#   4. run_ab.sh: bench_layer with that cache ("new") vs ab_cache/ (the cache before this session, "base")
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "sub_tiles" 2>&1 | tail -3
for wl in dsv3 gptoss v4flash qwen3; do
  timeout 110 python benchmarks/sweep_gemm.py --sub --workload "$wl" --tokens 512,2048 \
      --json "$OUT/h200-sub-$wl.json" 2>&1 | grep -v Warning \
      | sed -E 's/ fuse=0 maxnreg=None//; s/ swap=1//; s/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' \
      | cut -c1-190
done
python benchmarks/set_cache_pick.py --device "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
    --from-sweep "$OUT"/h200-sub-*.json --min-gain 0.03 | sed -E 's/GemmConfig\(([^)]*)\)/cfg/g'
OUT="$OUT/ab" WORKLOADS=dsv3,gptoss,v4flash,qwen3 TOKENS=128,512,2048 BENCH_TIMEOUT=100 \
    RUNS="new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/ab_cache new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/ab_cache" \
    bash benchmarks/run_ab.sh
tar -czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"     # few files come back
