#!/usr/bin/env bash
# Session 14, second 4-GPU call: the TMA return with per-row batched loads; EP tests (every transport
# incl. symm_mem_tma, 1000-call stress each); return A/B in the sweep; bench_ep SM vs TMA return.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python benchmarks/sweep_ep_copy.py --ranks 4 --tokens 4096 --json "$OUT/sweep2.json" 2>&1 \
    | grep -v Warning | tee "$OUT/sweep2.log" | grep -E "tma|return|nccl|T=" | tail -40
for tma in 0 1; do
  TMOE_EP_TMA=$tma timeout 120 python benchmarks/bench_ep.py --ranks 4 --tokens 4096 --return-mode separate \
      --json "$OUT/ep4-sep-tma$tma.json" 2>&1 | grep -v Warning | tee "$OUT/ep4-sep-tma$tma.log" | tail -3
done
timeout 280 python -m pytest -q -s -p no:cacheprovider tests/test_ep_collective.py tests/test_tma_copy.py 2>&1 \
    | tee "$OUT/pytest_ep.log" | grep -E "passed|failed|error|calls in|Error|assert" | tail -30
