#!/bin/bash
# Session 24, call 2 (call 1's H100, warm): v4flash (call 1 stopped there: triton_kernels' top-k takes power-of-2 k
# only; now a note per row), and a second sample of gpt-oss / dsv3 at 1 / 8 / 128 / 8192 tokens.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
timeout 200 python benchmarks/bench_triton_kernels.py --triton-kernels .thirdparty --workloads v4flash \
    --json "$OUT/tk-v4flash.json" 2>&1 | grep -v -i warn
timeout 300 python benchmarks/bench_triton_kernels.py --triton-kernels .thirdparty --workloads gptoss,dsv3 \
    --tokens 1,8,128,8192 --json "$OUT/tk-repeat.json" 2>&1 | grep -v -i warn
