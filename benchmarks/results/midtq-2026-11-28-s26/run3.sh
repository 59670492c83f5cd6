#!/bin/bash
# Session 26, call 3 (one H200): GEMM1 with the TMA ring too (its token rows copied into the plan's order first,
# kernels/row_gather.py, the copy timed with it). The bitwise GPU tests of both rings (each TMA config against the
# Triton kernel, the cp.async ring and each other), the row gather, then GEMM1 and GEMM2 alone at T = 8192 (every
# workload) and dsv3 T = 2048: the H200 pick, the same tile with 3 stages, with the TMA ring.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python benchmarks/run_gpu_tests.py --procs 8 --timeout 180 --out /tmp/t \
    "tests/test_gluon_gemm.py::test_gluon_tma_ring" tests/test_row_gather.py tests/test_ptx_patch.py 2>&1 | tail -9
grep -h -E "FAILED|Error|assert" /tmp/t/shard-*.txt | head -20
for spec in dsv3:8192 v4flash:8192 gptoss:8192 qwen3:8192 dsv3:2048; do
  IFS=: read -r w toks <<< "$spec"
  timeout 110 python benchmarks/sweep_gemm.py --workload "$w" --tokens "$toks" --tma-b \
      --json "$OUT/sweep-$w-$toks.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-215
done
