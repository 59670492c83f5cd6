#!/usr/bin/env bash
# Session 14, third 4-GPU call: GEMM2's TMA row epilogue (the fused return by TMA stores).
#   1. tests/test_tma_copy.py on one GPU (GEMM2 TMA rows bitwise vs slot_out, copy kernels)
#   2. bench_ep dsv3 1 / 128 / 4096 tokens per rank: TMOE_EP_TMA=0 (shipped: fused <= 256 tokens, then the
#      SM return pass) vs 1 (fused by TMA at every size), twice interleaved
#   3. the EP tests (every transport variant incl. symm_mem_tma_fused, 1000-call stress each)
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_tma_copy.py 2>&1 | tee "$OUT/test_tma.log" | tail -15
for run in 1 2; do
  for tma in 0 1; do
    TMOE_EP_TMA=$tma timeout 150 python benchmarks/bench_ep.py --ranks 4 --tokens 1,128,4096 --return-mode auto \
        --json "$OUT/ep4-tma$tma-run$run.json" 2>&1 | grep -v Warning | tee "$OUT/ep4-tma$tma-run$run.log" | tail -4
  done
done
timeout 240 python -m pytest -q -s -p no:cacheprovider tests/test_ep_collective.py 2>&1 \
    | tee "$OUT/pytest_ep.log" | grep -E "passed|failed|error|calls in|Error|assert" | tail -30
