#!/bin/bash
# Session 24, call 5 (one H100): the GPU tests that run the three-launch routing under the PDL chain (test_pdl:
# 40 tokens x K), the simulated EP transports, routing, the triton_kernels peer's tests (vLLM 0.33.0's copy carried as
# .thirdparty/), then the layer A/B against a675e0d (ab_base/) at 32 / 128 tokens, where K > 4 slots take that path.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
export TMOE_TRITON_KERNELS=$PWD/.thirdparty
timeout 330 python benchmarks/run_gpu_tests.py --procs 8 --timeout 300 --out "$OUT/tests" --exclude tests/test_ep_collective.py tests/test_pdl.py \
    tests/test_routing.py tests/test_ep_symm_mem.py tests/test_bench_triton_kernels.py tests/test_autotune.py 2>&1 | tail -14
RUNS="new base new base" WORKLOADS=dsv3,qwen3,gptoss TOKENS=32,128 BENCH_TIMEOUT=55 bash benchmarks/run_ab.sh > /dev/null
timeout 30 python benchmarks/report.py --ab "$OUT" 2>&1 | tail -9
