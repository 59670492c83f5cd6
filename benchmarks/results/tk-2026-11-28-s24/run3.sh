#!/bin/bash
# Session 24, call 3 (one H100): the final script's whole table — tmoe vs triton_kernels (vLLM 0.33.0's copy, carried
# as .thirdparty/), every workload and T, floors and efficiencies, kernel timelines of both at 1 / 8 / 8192 tokens.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
export TMOE_TRITON_KERNELS=$PWD/.thirdparty
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 150 python -m pytest -q tests/test_bench_triton_kernels.py 2>&1 | tail -3
timeout 420 python benchmarks/bench_triton_kernels.py --triton-kernels .thirdparty \
    --workloads gptoss,dsv3,qwen3,v4flash --timeline 1,8,8192 --json "$OUT/tk.json" 2>&1 | grep -v -i warn
