#!/usr/bin/env bash
# Session 18, calls 11 (H200) and 12 (H100): the depth sweep (tune_layer_small.py --space depth) at the cache's small
# buckets between 1 and 8 tokens (SPECS: workload:tokens:timeout, only tokens that are buckets of both GEMMs' files),
# the winners >= 1% into a copy of the cache (set_cache_pick.py --min-gain 0.01; no new buckets: every swept T is a
# bucket), then a layer A/B of that copy (N) against autotune_cache (A) at the same T, runs N A N A.
# Everything comes back as one tarball (the device returns a few files at most).
set -u
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT/w"
W=$OUT/w
export PYTHONPATH=. PYTHONUNBUFFERED=1
DEV=$(python -c "import torch; print(torch.cuda.get_device_name())")
echo "$DEV"
for spec in $SPECS; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/tune_layer_small.py --space depth --workloads "$wl" --tokens "$tok" \
      --json "$W/depth-$wl.json" 2>&1 | grep -v Warning | tee -a "$W/log.txt" | grep -c same= > /dev/null
done
rm -rf "$W/cache_N"; cp -r autotune_cache "$W/cache_N"
python benchmarks/set_cache_pick.py --root "$W/cache_N" --device "$DEV" --from-sweep "$W"/depth-*.json --min-gain 0.01 \
    | tee "$W/picks.txt" | grep -- "->" | cut -c1-60
TOK=$(for spec in $SPECS; do echo "$spec" | cut -d: -f2; done | tr ',' '\n' | sort -nu | paste -sd,)
WLS=$(for spec in $SPECS; do echo "$spec" | cut -d: -f1; done | paste -sd,)
OUT="$W/ab" WORKLOADS=$WLS TOKENS=$TOK BENCH_TIMEOUT=80 \
    RUNS="N:TMOE_AUTOTUNE_CACHE=$W/cache_N A:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache N:TMOE_AUTOTUNE_CACHE=$W/cache_N A:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache" \
    bash benchmarks/run_ab.sh > "$W/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" | tee "$W/ab.txt"
rm -f "$W"/ab/*.log
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
