#!/bin/bash
# Session 26, call 5 (one H200): every body of a tma_b tile on the TMA ring (the sub and three-quarter bodies too:
# their own boxes of sub_block_m, block_m / 2 and / 4 rows). The bitwise GPU tests of the rings, then GEMM1 and GEMM2
# alone at T = 8192 (every workload): the pick (call 4's cache: full body on TMA) against the same tile without the
# ring and with it on every body.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python benchmarks/run_gpu_tests.py --procs 8 --timeout 180 --out /tmp/t \
    "tests/test_gluon_gemm.py::test_gluon_tma_ring" "tests/test_gluon_gemm.py::test_gluon_three_quarter_body" \
    "tests/test_gluon_gemm.py::test_gluon_sub_tiles" 2>&1 | tail -3
grep -h -E "FAILED|Error|assert" /tmp/t/shard-*.txt | head -20
# the previous picks (no ring) from HEAD~1's cache: the sweep's first row, then both rings
for w in dsv3 v4flash gptoss qwen3; do
  TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache timeout 110 python benchmarks/sweep_gemm.py --workload "$w" \
      --tokens 8192 --tma-b --json "$OUT/sweep-$w-8192.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-215
done
