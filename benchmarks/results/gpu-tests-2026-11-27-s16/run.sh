#!/usr/bin/env bash
# Session 16, ninth call (one H100): the GPU tests touched by this session's changes (the grid order as an int,
# GemmConfig.group_m, _launch_over_tiles): the Gluon GEMM file without its 450 s bitwise matrix, and the layer / PDL /
# TMA / autotune / launch files (the EP files want 2-4 GPUs).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TMOE_HYPOTHESIS_PROFILE=ci timeout 540 python -m pytest -q -p no:cacheprovider --durations=10 -k "not bitwise_equals_triton" \
    tests/test_gluon_gemm.py tests/test_layer.py tests/test_pdl.py tests/test_tma_copy.py tests/test_autotune.py \
    tests/test_gluon_launch.py 2>&1 | tee "$OUT/pytest.log" | tail -25
