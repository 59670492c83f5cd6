#!/usr/bin/env bash
# Session 14, one 4-GPU device call: TMA row copies for the symm_mem return pass.
#   1. tests/test_tma_copy.py (one GPU: the copy kernels bitwise)
#   2. sweep_ep_copy.py at 4096 dsv3 tokens/rank: SM / TMA / NCCL copy ceilings, return pass SM vs TMA (A/B x 2)
#   3. bench_ep.py, auto return mode, SM return (TMOE_EP_TMA=0) then TMA return (=1), same machine
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 90 python -m pytest -q -p no:cacheprovider tests/test_tma_copy.py 2>&1 | tee "$OUT/test_tma.log" | tail -4
timeout 200 python benchmarks/sweep_ep_copy.py --ranks 4 --tokens 4096 --json "$OUT/sweep.json" 2>&1 \
    | grep -v Warning | tee "$OUT/sweep.log" | tail -80
for tma in 0 1; do
  TMOE_EP_TMA=$tma timeout 150 python benchmarks/bench_ep.py --ranks 4 --tokens 1,128,4096 --return-mode auto \
      --json "$OUT/ep4-tma$tma.json" 2>&1 | grep -v Warning | tee "$OUT/ep4-tma$tma.log" | tail -8
done
