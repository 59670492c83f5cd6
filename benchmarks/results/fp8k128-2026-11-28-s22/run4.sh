#!/usr/bin/env bash
# Session 22, call 4 (one H200): the early-GEMM2 picks for the H200 — a cache with every dsv3 / gpt-oss / v4flash
# bucket 4-128 set to early GEMM2 + both grids N-block-major (ab_cache_h200/, made with set_cache_pick.py) against the
# shipped cache, and against early GEMM2 with the shipped grid orders (TMOE_EARLY_GEMM2=1); layer A/B interleaved.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
NEW=$PWD/ab_cache_h200/autotune_cache OLD=$PWD/autotune_cache
OUT=$W/ab WORKLOADS=dsv3,gptoss,v4flash TOKENS=4,8,16,32,128 BENCH_TIMEOUT=90 \
  RUNS="order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD early:TMOE_EARLY_GEMM2=1 order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD early:TMOE_EARLY_GEMM2=1" \
  timeout 500 bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -20
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
