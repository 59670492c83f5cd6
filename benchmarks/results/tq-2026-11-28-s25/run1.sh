#!/bin/bash
# Session 25, call 1 (one H200; no H100 kind was lent this session): the three-quarter body (GemmConfig.three_quarter, NOTES "v31"). The Gluon GEMM tests
# (bitwise matrix incl. test_gluon_three_quarter_body) in parallel shards, then the GEMMs alone at v4flash 6144 / 8192
# and dsv3 8192: the shipped pick vs the same tile with the three-quarter body (sweep_gemm.py --three-quarter, bitwise
# vs the pick).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python benchmarks/run_gpu_tests.py --procs 12 --timeout 300 --out /tmp/t tests/test_gluon_gemm.py 2>&1 | tail -16
for spec in v4flash:8192,6144:150 dsv3:8192:130; do
  w=${spec%%:*}; rest=${spec#*:}; toks=${rest%%:*}
  timeout "${rest#*:}" python benchmarks/sweep_gemm.py --workload "$w" --tokens "$toks" --three-quarter \
      --json "$OUT/sweep-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-190
done
