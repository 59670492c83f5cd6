#!/usr/bin/env bash
# Session 15, second call (one GPU): more sub-body variants, then the layer with the new picks vs the old cache.
#   1. sweep_gemm.py --sub: v4flash T = 2048 (not swept in run1), dsv3 T = 2048 (the new GEMM2 pick's variants)
#   2. set_cache_pick.py takes the winners (>= 3%) into this checkout's autotune_cache (redone locally from the JSONs)
#   3. run_ab.sh: bench_layer with this cache ("new") vs ab_cache/ (the cache before this session, "base"),
#      interleaved new / base / new, T = 512 / 2048
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
for spec in v4flash:2048:110 dsv3:2048:110; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/sweep_gemm.py --sub --workload "$wl" --tokens "$tok" \
      --json "$OUT/sub2-$wl-$tok.json" 2>&1 | grep -v Warning \
      | sed -E 's/ fuse=0 maxnreg=None//; s/ \| regs=([0-9]+) spills=([0-9]+).*/ regs=\1 spills=\2/' | cut -c1-200
done
python benchmarks/set_cache_pick.py --device "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
    --from-sweep "$OUT"/sub2-*.json --min-gain 0.03
OUT="$OUT/ab" WORKLOADS=dsv3,gptoss,v4flash TOKENS=512,2048 BENCH_TIMEOUT=100 \
    RUNS="new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache base:TMOE_AUTOTUNE_CACHE=$PWD/ab_cache new:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache" \
    bash benchmarks/run_ab.sh
tar -czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"     # few files come back
