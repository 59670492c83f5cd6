#!/bin/bash
# Session 24, call 9 (one H100): after the review's routing refactor (_store_expert_outputs in both routing paths),
# the routing, PDL-chain and layer GPU tests again.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
timeout 280 python benchmarks/run_gpu_tests.py --procs 8 --timeout 260 --out "$OUT/tests" tests/test_routing.py \
    tests/test_pdl.py tests/test_layer.py 2>&1 | tail -12
