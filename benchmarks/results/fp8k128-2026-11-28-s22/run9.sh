#!/usr/bin/env bash
# Session 22, call 9 (one H100): tune_layer_small.py after the review's refactor (measure_pairs shared by the per-GEMM
# search and --space early): one kloop search and one early search, one round each.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python benchmarks/tune_layer_small.py --space kloop --workloads qwen3 --tokens 1 --rounds 1 \
    --json "$OUT/kloop.json" 2>&1 | grep -v Warning | tee "$OUT/kloop.log"
timeout 100 python benchmarks/tune_layer_small.py --space early --workloads gptoss --tokens 8 --rounds 1 \
    --json "$OUT/early.json" 2>&1 | grep -v Warning | tee "$OUT/early.log"
