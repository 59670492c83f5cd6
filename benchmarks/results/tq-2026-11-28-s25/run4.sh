#!/bin/bash
# Session 25, call 4 (one H200): the layer tests with this session's caches (test_layer, test_autotune: every shipped
# pick validated / compiled, test_pdl), then the layer table's mid and prefill rows (T = 2048 / 8192, every workload,
# uniform routing, the copy / grouped-GEMM baselines in the same process) with the three-quarter picks. The decode rows
# run session 23's kernels and H200 picks (results/H200-2026-11-28-s23.json).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python benchmarks/run_gpu_tests.py --procs 12 --timeout 220 --out /tmp/t tests/test_layer.py \
    tests/test_autotune.py tests/test_pdl.py 2>&1 | tail -4
timeout 330 python benchmarks/bench_layer.py --workloads dsv3,v4flash,gptoss,qwen3 --tokens 2048,8192 \
    --routing uniform --json "$OUT/H200-2026-11-28-s25-mid-prefill.json" > /tmp/layer.log 2>&1; echo "table rc=$?"
grep -v "^|--" /tmp/layer.log | grep -v -i warn | head -14
