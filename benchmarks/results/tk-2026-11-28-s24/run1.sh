#!/bin/bash
# Session 24, call 1 (one H100): tmoe vs OpenAI's triton_kernels — the copy vLLM 0.33.0 ships
# (vllm/third_party/triton_kernels, taken from the wheel and carried to the device as .thirdparty/, not committed).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
export TMOE_TRITON_KERNELS=$PWD/.thirdparty
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 240 python -m pytest -q tests/test_bench_triton_kernels.py 2>&1 | tail -15
timeout 420 python benchmarks/bench_triton_kernels.py --triton-kernels .thirdparty \
    --workloads gptoss,dsv3,qwen3,v4flash --json "$OUT/tk.json" 2>&1 | grep -v -i warn
