#!/usr/bin/env bash
# Session 18, ninth call (one H100): Nsight Compute on gpt-oss T = 8's GEMMs with this session's picks (code rings
# with STAGES = DEPTH + 1) and with session 17's cache (old_cache/: `git archive 691d69f autotune_cache`, deleted
# after the call): do the stalls after the ring's cp.async waits shrink?
set -u
OUT0=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT0"
for run in new old; do
  cache=$PWD/autotune_cache; [ $run = old ] && cache=$PWD/old_cache/autotune_cache
  OUT="$OUT0/$run" TMOE_AUTOTUNE_CACHE=$cache CASES="gptoss:8" KERNEL_FILTER=regex:wgmma TOP=14 NCU_TIMEOUT=200 \
      bash benchmarks/run_ncu.sh > "$OUT0/$run.txt" 2>&1
  rm -f "$OUT0/$run/ncu.tar.gz"
done
tail -c 5500 "$OUT0/new/ncu-summary.txt"; tail -c 5500 "$OUT0/old/ncu-summary.txt"
