#!/usr/bin/env bash
# Session 22, call 7 (one H200): the H200 buckets 2 (gpt-oss, v4flash, dsv3), 3 (v4flash), 4 (dsv3) with early GEMM2 + both
# grids N-block-major (ab_cache_h2/, set_cache_pick.py) against the shipped cache; layer A/B, 3 + 3 interleaved.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
NEW=$PWD/ab_cache_h2/autotune_cache OLD=$PWD/autotune_cache
OUT=$W/ab WORKLOADS=gptoss,v4flash,dsv3 TOKENS=2,3,4,5 BENCH_TIMEOUT=90 \
  RUNS="order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD order:TMOE_AUTOTUNE_CACHE=$NEW off:TMOE_AUTOTUNE_CACHE=$OLD" \
  timeout 300 bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -12
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
