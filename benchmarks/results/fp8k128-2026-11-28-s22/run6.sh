#!/usr/bin/env bash
# Session 22, call 6 (one H100): the 2-token buckets of gpt-oss / v4flash (T = 2-4 on the H100) with early GEMM2 + both
# grids N-block-major (ab_cache_b2/, set_cache_pick.py) against the shipped cache; layer A/B, 3 + 3 interleaved.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
NEW=$PWD/ab_cache_b2/autotune_cache OLD=$PWD/autotune_cache
OUT=$W/ab WORKLOADS=gptoss,v4flash TOKENS=2,3,4 BENCH_TIMEOUT=90 \
  RUNS="order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD" \
  timeout 300 bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -12
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
