#!/usr/bin/env bash
# Session 22, call 8 (one H100): the new `tune_layer_small.py --space early` end to end (qwen3 T = 8, gpt-oss T = 16:
# a bucket-8 pick with early and one without), then set_cache_pick --from-sweep on a scratch copy of the cache.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 200 python benchmarks/tune_layer_small.py --space early --workloads qwen3,gptoss --tokens 8 --rounds 3 \
    --json "$OUT/early.json" 2>&1 | grep -v Warning | tee "$OUT/early.log"
cp -r autotune_cache /tmp/scratch_cache
python benchmarks/set_cache_pick.py --device "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
    --root /tmp/scratch_cache --from-sweep "$OUT/early.json" --min-gain 0.01 2>&1 | tee "$OUT/from-sweep.log" | cut -c1-200
