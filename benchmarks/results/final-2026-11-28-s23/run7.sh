#!/usr/bin/env bash
# Session 23, call 7 (two GPUs): the EP tests after the review mend — the early variants now also assert that GEMM1
# counted every row it computed per local expert (i.e. GEMM2 ran early, not behind the whole-kernel wait).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$W/gpu.txt"
TMOE_EP_WORLDS=2 timeout 240 python -m pytest -q -s -p no:cacheprovider tests/test_ep_collective.py > "$W/pytest_ep.log" 2>&1
echo "pytest rc=$?"; grep -E "passed|failed|error|Error|assert" "$W/pytest_ep.log" | grep -v "^rank" | tail -12
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
