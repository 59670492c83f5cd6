#!/usr/bin/env bash
# Session 22, call 2 (one GPU): early GEMM2 with both grids N-block-major (TMOE_EARLY_GEMM2=order) against off,
# the same grid orders without early GEMM2 (nmajor, the control) and session 21's early (1); layer A/B interleaved,
# T = 1-128, after the layer tests with "order" on.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
TMOE_EARLY_GEMM2=order timeout 100 python -m pytest -q -p no:cacheprovider tests/test_layer.py > "$W/pytest-layer.txt" 2>&1
echo "tests: $(( $(date +%s) - T0 )) s: $(tail -n 1 $W/pytest-layer.txt)"
OUT=$W/ab WORKLOADS=gptoss,dsv3,qwen3,v4flash TOKENS=1,8,32,128 BENCH_TIMEOUT=100 \
  RUNS="off:TMOE_EARLY_GEMM2=0 order:TMOE_EARLY_GEMM2=order nmajor:TMOE_EARLY_GEMM2=nmajor early:TMOE_EARLY_GEMM2=1 off:TMOE_EARLY_GEMM2=0 order:TMOE_EARLY_GEMM2=order nmajor:TMOE_EARLY_GEMM2=nmajor" \
  timeout 430 bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -22
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
