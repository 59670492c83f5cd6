#!/bin/bash
# Session 26, call 7 (one H200): the shipped tree after call 6 (the kernel back to call 3 / 4's: only the block_m body on
# the TMA ring; call 6's layer A/B measured the three-quarter body on TMA +2.3% dsv3, +1.3% gpt-oss, -0.2% v4flash
# against call 4): the GPU tests of the files this session's kernels touch, in parallel shards.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 290 python benchmarks/run_gpu_tests.py --procs 14 --timeout 270 --out /tmp/t tests/test_gluon_gemm.py \
    tests/test_tma_copy.py tests/test_layer.py tests/test_pdl.py tests/test_row_gather.py 2>&1 | tail -16
grep -h -E "^FAILED|^ERROR" /tmp/t/shard-*.txt | head -20
