#!/bin/bash
# Session 24, call 8 (call 7's H100, warm): triton_kernels vs tmoe at 8192 tokens with the new 8192-token picks.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
timeout 200 python benchmarks/bench_triton_kernels.py --triton-kernels .thirdparty --workloads qwen3,gptoss,dsv3 \
    --tokens 2048,8192 --json "$OUT/tk-8192.json" 2>&1 | grep -v -i warn
