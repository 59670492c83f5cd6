#!/bin/bash
# Session 25, last call (one H200): the three-quarter body on 8-warp 64-token tiles (a 16-row quarter): its bitwise
# case, then v4flash T = 2048 (48 rows per expert) GEMMs alone, the H200 picks vs the same tiles with it.
set -u
export PYTHONPATH=. TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
timeout 110 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "three_quarter_body and 160" 2>&1 | tail -2
timeout 130 python benchmarks/sweep_gemm.py --workload v4flash --tokens 2048 --three-quarter \
    --json "$OUT/sweep-v4flash-2048.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-190
