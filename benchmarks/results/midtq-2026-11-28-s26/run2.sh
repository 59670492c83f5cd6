#!/bin/bash
# Session 26, call 2 (one H200): GEMM2's activation ring filled by TMA (GemmConfig.tma_b, NOTES "v33"): an mbarrier
# per slot for the data, named barriers for slot reuse, no CTA barrier per K step (kernels/ptx_patch.py drops the ones
# Triton 3.6 adds), so an 8-warp tile's two warpgroups are not held in lockstep (ncu: the prefill tiles' first stall is
# that barrier, the tensor pipe ~50% busy). First its bitwise GPU test and the neighbouring GEMM2 body tests, then the
# GEMMs alone: the H200 pick, the same tile with 3 stages, and with the TMA ring (bitwise vs the pick).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python benchmarks/run_gpu_tests.py --procs 8 --timeout 180 --out /tmp/t \
    "tests/test_gluon_gemm.py::test_gluon_gemm2_tma_ring" "tests/test_gluon_gemm.py::test_gluon_three_quarter_body" \
    "tests/test_gluon_gemm.py::test_gluon_gemm2_row_addresses_three_quarter" 2>&1 | tail -6
grep -h -E "FAILED|Error|assert" /tmp/t/shard-*.txt | head -20
for spec in dsv3:8192 v4flash:8192 gptoss:8192 qwen3:8192 dsv3:2048 v4flash:2048 gptoss:2048; do
  IFS=: read -r w toks <<< "$spec"
  timeout 100 python benchmarks/sweep_gemm.py --workload "$w" --tokens "$toks" --tma-b \
      --json "$OUT/sweep-$w-$toks.json" 2>&1 | grep -E "^gemm2|FAILED" | cut -c1-215
done
