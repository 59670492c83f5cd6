#!/usr/bin/env bash
# Session 22, call 1 (one GPU): FP8 wgmma with ONE promotion per 128 K (the "fold" ceiling, NOTES v27) against the
# shipped bf16 GEMM1, v14's per-32 best and torch fp8 grouped, dsv3 / v4flash prefill and T = 2048 (activations
# re-encoded so each 128-K group has one scale: every kernel reads the same values); then the early-GEMM2 GPU test
# after session 21's real-tile mend.
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
V="64:8:4:1:1:128,64:8:4:1:2:0,64:8:3:1:2:0,64:4:4:1:2:0,128:8:3:1:2:0,128:8:4:1:2:0,32:4:4:1:2:0,t:64:4:2:0,t:32:4:2:0"
PYTHONPATH=. timeout 330 python benchmarks/bench_fp8_gemm.py --workload dsv3 --tokens 8192,2048 --variants "$V" \
    --json "$OUT/dsv3.json" 2>&1 | grep -v Warning | tee "$OUT/dsv3.log"
PYTHONPATH=. timeout 100 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k early 2>&1 | tail -4 \
    | tee "$OUT/early.log"
V2="64:8:4:1:2:0,128:8:3:1:2:0,t:64:4:2:0"
PYTHONPATH=. timeout 120 python benchmarks/bench_fp8_gemm.py --workload v4flash --tokens 8192 --variants "$V2" \
    --json "$OUT/v4flash.json" 2>&1 | grep -v Warning | tee "$OUT/v4flash.log"
