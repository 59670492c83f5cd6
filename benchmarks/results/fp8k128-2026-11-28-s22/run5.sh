#!/usr/bin/env bash
# Session 22, call 5 (one H200): the early-GEMM2 picks (GemmConfig.early, TMOE_EARLY_GEMM2=auto by default) —
# layer A/B, this tree with its cache (new) against
# the same code with the session-start commit's H200 picks (old: ab_cache_old/, extracted by `git archive HEAD autotune_cache`),
# interleaved, at the buckets the picks cover and their neighbours.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
NEW=$PWD/autotune_cache OLD=$PWD/ab_cache_old/autotune_cache
OUT=$W/ab WORKLOADS=dsv3,gptoss,v4flash TOKENS=4,8,16,32,128 BENCH_TIMEOUT=90 \
  RUNS="new:TMOE_AUTOTUNE_CACHE=$NEW old:TMOE_AUTOTUNE_CACHE=$OLD new:TMOE_AUTOTUNE_CACHE=$NEW old:TMOE_AUTOTUNE_CACHE=$OLD new:TMOE_AUTOTUNE_CACHE=$NEW" \
  timeout 380 bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -20
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
